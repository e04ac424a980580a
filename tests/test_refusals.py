"""Storage refuses with named rules; the server answers each with the API error of the
same name, through the one error middleware."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from server.errors import Errors, error_middleware, refusal_kind
from storage.refusals import Refused, Rule


@pytest.mark.parametrize("rule", list(Rule))
def test_every_rule_has_an_error_of_its_name(rule: Rule) -> None:
    kind = refusal_kind(rule)
    assert kind is getattr(Errors, rule.name)
    assert 400 <= kind.status < 500  # a refusal is the caller's to fix, never a 500


def test_the_middleware_renders_a_refusal_as_json() -> None:
    async def handler(_request: web.Request) -> web.Response:
        raise Refused(Rule.MEETING_NOT_FOUND, "m_nope")

    request = make_mocked_request("GET", "/meetings/m_nope")
    response = asyncio.run(error_middleware(request, handler))
    assert isinstance(response, web.Response)
    assert response.status == 404
    body = json.loads(response.text or "")
    assert body == {
        "error": {"code": "ERR_MEETING_NOT_FOUND", "message": "no such meeting: m_nope"}
    }
