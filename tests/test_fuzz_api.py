"""Schemathesis fuzzes a live server, with API keys and without, from the description that
server serves (tests/test_openapi.py checks the served one is this one): no answer is a
5xx, every answer is one the description declares (status, content type, headers, body),
405 names what is allowed, invalid data and missing required headers are refused, the key
is enforced, and a refused request (4xx) leaves everything stored as it was.

Two runs per server: on made-up ids (the description as is), and on things `seed` made
(path parameters pinned to them), so the fuzzer also meets real meetings and uploads.

Bounded for CI: deterministic generation (derandomized, a fixed seed), a few examples per
operation, no shrinking. Requests go only to the server on 127.0.0.1. Nothing that makes the
server send a request is fuzzed: creating a webhook, and replaying deliveries.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from server.api_description import openapi_document
from tests.conftest import TUS, metadata
from tests.server_process import ServerProcess
from tests.stored_state import sqlite_server, stored

pytestmark = pytest.mark.storage_free

KEY = "fuzz-key-0123456789abcdef"
# Operations that could make the server send a request somewhere: never fuzzed.
SENDS_REQUESTS = ("createWebhook", "replayDeliveries", "replayDelivery")
# An endless text/event-stream for a meeting that exists: fuzzed with made-up ids only.
STREAMS = ("meetingEvents",)
CHECKS = [
    not_a_server_error,
    unsupported_method,  # 405, with Allow
    negative_data_rejection,
    missing_required_header,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# CI's bound; a deeper local hunt: ROLLSCRIBE_FUZZ_EXAMPLES=200 ROLLSCRIBE_FUZZ_SEED=7.
MAX_EXAMPLES = int(os.environ.get("ROLLSCRIBE_FUZZ_EXAMPLES", "25"))
SEED = int(os.environ.get("ROLLSCRIBE_FUZZ_SEED", "20"))


def seed(base_url: str, headers: dict[str, str]) -> dict[str, list[str]]:
    """Things that exist, so that the fuzzer reaches past "not found": a meeting with a
    track, a chunk upload half done, a deferred-length upload, a complete partial upload."""
    meeting = requests.post(
        base_url + "/meetings",
        json={"tracks": ["mic"], "title": "fuzz"},
        headers=headers,
        timeout=10,
    ).json()["id"]

    def create(**extra: str) -> str:
        r = requests.post(base_url + "/files/", headers={**TUS, **headers, **extra}, timeout=10)
        assert r.status_code == 201, r.text
        return r.headers["Location"].rsplit("/", 1)[1]

    octet = {**TUS, **headers, "Content-Type": "application/offset+octet-stream"}
    chunk = create(
        **{
            "Upload-Length": "64",
            "Upload-Metadata": metadata(meeting_id=meeting, track="mic", seq=0, start_ms=0),
        }
    )
    requests.patch(
        f"{base_url}/files/{chunk}",
        data=b"x" * 10,
        headers={**octet, "Upload-Offset": "0"},
        timeout=10,
    )
    deferred = create(**{"Upload-Defer-Length": "1"})
    partial = create(**{"Upload-Length": "3", "Upload-Concat": "partial"})
    requests.patch(
        f"{base_url}/files/{partial}",
        data=b"abc",
        headers={**octet, "Upload-Offset": "0"},
        timeout=10,
    )
    return {
        "meeting_id": [meeting],
        "upload_id": [chunk, deferred, partial],
        "track": ["mic"],
        "seq": ["0"],
    }


def pinned_to_seeded(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of the description (for this test only; the served one is not changed) with
    only the paths that name a seeded thing, whose path parameters are then placeholders
    that the test swaps for the seeded values (see `seed`): the fuzzer meets real meetings
    and uploads, not only made-up ids."""
    document = copy.deepcopy(document)
    for path, item in list(document["paths"].items()):
        parameters = item.get("parameters", [])
        streams = any(
            isinstance(op, dict) and op.get("operationId") in STREAMS for op in item.values()
        )
        if streams or not any(p["name"] in SEEDED for p in parameters):
            del document["paths"][path]
            continue
        # OPTIONS answers any id alike: the made-up run covers it, and here a made-up id
        # (the "negative" of a pinned one) would look like invalid data accepted.
        item.pop("options", None)
        for parameter in parameters:
            count = SEEDED.get(parameter["name"], 0)
            if count:
                placeholders = [f"seeded-{parameter['name']}-{i}" for i in range(count)]
                parameter["schema"] = {"type": "string", "enum": placeholders}
    return document


# tus bodies are bytes, as application/octet-stream's.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")
# How many of each thing `seed` makes.
SEEDED = {"meeting_id": 1, "upload_id": 3, "track": 1, "seq": 1}
CONFIG = schemathesis.Config.from_dict(
    {
        "request-timeout": 20,
        "seed": SEED,
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "no-shrink": True,
            # The key is the test's to send (or not: ignored_auth), not a fuzzed header.
            "with-security-parameters": False,
        },
        "phases": {"stateful": {"enabled": False}},
        # Without Tus-Resumable: 412; without X-HTTP-Method-Override: 405.
        "checks": {
            # Refusals of invalid data: tus answers some with 410, 412, 413, 423 or 460.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "409",
                    "410",
                    "412",
                    "413",
                    "415",
                    "423",
                    "460",
                ]
            },
            "missing_required_header": {
                "expected-statuses": ["400", "401", "403", "405", "412", "415"]
            },
        },
    }
)


def fuzz_schemas(keys_enabled: bool) -> tuple[schemathesis.BaseSchema, schemathesis.BaseSchema]:
    """On made-up ids, and on the seeded things; from the description as the server with
    (or without) keys serves it."""
    document = openapi_document(keys_enabled)
    return tuple(  # type: ignore[return-value]
        schemathesis.openapi.from_dict(doc, config=CONFIG).exclude(
            operation_id=list(SENDS_REQUESTS)
        )
        for doc in (document, pinned_to_seeded(document))
    )


made_up_open, seeded_open = fuzz_schemas(keys_enabled=False)
made_up_keyed, seeded_keyed = fuzz_schemas(keys_enabled=True)


@dataclass
class Target:
    server: ServerProcess
    headers: dict[str, str]
    seeded: dict[str, list[str]]


def _target(server: ServerProcess, headers: dict[str, str]) -> Target:
    return Target(server, headers, seed(server.url, headers))


@pytest.fixture(scope="module")
def open_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = sqlite_server(tmp_path_factory.mktemp("fuzz-open") / "data", {}).start()
    yield _target(server, {})
    server.stop()


@pytest.fixture(scope="module")
def keyed_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = sqlite_server(
        tmp_path_factory.mktemp("fuzz-keyed") / "data", {"ROLLSCRIBE_API_KEYS": KEY}
    ).start()
    yield _target(server, {"Authorization": f"Bearer {KEY}"})
    server.stop()


def _swap_placeholders(case: Case, seeded: dict[str, list[str]]) -> None:
    for name, value in (case.path_parameters or {}).items():
        if isinstance(value, str) and value.startswith(f"seeded-{name}-"):
            case.path_parameters[name] = seeded[name][int(value.rsplit("-", 1)[1])]


def call_and_check(case: Case, target: Target, extra_checks: list | None = None) -> None:
    _swap_placeholders(case, target.seeded)
    data_dir = target.server.data_dir
    before = stored(data_dir)
    response = case.call(base_url=target.server.url, headers=target.headers)
    case.validate_response(
        response,
        checks=CHECKS + (extra_checks or []),
        headers=target.headers,
        transport_kwargs={"base_url": target.server.url, "headers": target.headers},
    )
    # A 4xx with Location is a creation-with-upload whose body failed after the upload was
    # made (the description says so): the creation happened, the rest was refused. (The
    # names in a schemathesis Response's headers are lowercase.)
    if 400 <= response.status_code < 500 and "location" not in response.headers:
        after = stored(data_dir)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        assert not changed, (
            f"{case.method} {case.formatted_path} answered {response.status_code} "
            f"{response.text[:300]!r} but changed {sorted(changed)}"
        )


@made_up_open.parametrize()
def test_fuzz_without_keys(case: Case, open_target: Target) -> None:
    call_and_check(case, open_target)


@seeded_open.parametrize()
def test_fuzz_without_keys_on_seeded_things(case: Case, open_target: Target) -> None:
    call_and_check(case, open_target)


@made_up_keyed.parametrize()
def test_fuzz_with_keys(case: Case, keyed_target: Target) -> None:
    # ignored_auth: the same request without the key (or with a wrong one) must be refused.
    call_and_check(case, keyed_target, [ignored_auth])


@seeded_keyed.parametrize()
def test_fuzz_with_keys_on_seeded_things(case: Case, keyed_target: Target) -> None:
    call_and_check(case, keyed_target, [ignored_auth])
