"""Text no database can keep as given gets the same clear answer on both: NUL, which
PostgreSQL's text cannot hold (it refused with a fault, 500, where SQLite kept it or answered
"not found"), and an unpaired surrogate, which JSON's "\\ud800" decodes to and which has no
UTF-8 form (both databases' drivers failed on it: 500). Fields are refused 400
(`storage/field_rules.is_storable_text`); a path holding NUL names nothing, 404
(`server/path_params.py`); a chunk's meeting_id holding one names no meeting, 404."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from storage.field_rules import is_storable_text
from tests.conftest import TUS, create_meeting, tus_create

NUL = "\x00"
SURROGATE = "\ud800"
SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def _post_json(url: str, body: dict) -> requests.Response:
    # json.dumps writes "\ud800" as that escape, as a client's JSON library would.
    data = json.dumps(body)
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=30)


def _assert_error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_storable_text() -> None:
    assert is_storable_text("")
    assert is_storable_text("Weekly sync: été 🎙")
    assert is_storable_text("tabs\tand\nnewlines")
    assert not is_storable_text("a" + NUL)
    assert not is_storable_text("é" + NUL)
    assert not is_storable_text("ok" + SURROGATE)
    assert not is_storable_text("\udfff")


@pytest.mark.parametrize("field", ["title", "external_id"])
@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_meeting_text_fields_refuse_what_no_database_keeps(tus_server, field, bad) -> None:
    response = _post_json(f"{tus_server.url}/meetings", {field: f"weekly{bad}sync"})
    _assert_error(response, 400, "ERR_INVALID_FIELD")
    assert field in response.json()["error"]["message"]


def test_meeting_text_beyond_ascii_comes_back_as_sent(tus_server) -> None:
    title, external_id = "Réunion 🎙 «lundi»", "cal-évt-42 🗓"
    made = _post_json(f"{tus_server.url}/meetings", {"title": title, "external_id": external_id})
    assert made.status_code == 201, made.text
    view = requests.get(f"{tus_server.url}/meetings/{made.json()['id']}", timeout=30).json()
    assert (view["title"], view["external_id"]) == (title, external_id)
    # The external id finds the same meeting again.
    again = _post_json(f"{tus_server.url}/meetings", {"external_id": external_id})
    assert again.json()["id"] == made.json()["id"]


@pytest.mark.parametrize("bad", [NUL, SURROGATE], ids=["nul", "surrogate"])
def test_a_webhook_url_refuses_what_no_database_keeps(tus_server, bad) -> None:
    body = {
        "url": f"http://127.0.0.1:9/hook{bad}",
        "secret": SECRET,
        "events": ["meeting.completed"],
    }
    _assert_error(_post_json(f"{tus_server.url}/webhooks", body), 400, "ERR_INVALID_FIELD")


def test_a_path_holding_nul_names_nothing(tus_server) -> None:
    base = tus_server.url
    meeting = create_meeting(base, tracks=["mic"])["id"]
    for method, path in [
        ("GET", "/meetings/m%00"),
        ("DELETE", "/meetings/m%00"),
        ("GET", "/meetings/m%00/events"),
        ("GET", "/meetings/m%00/transcript"),
        ("POST", "/meetings/m%00/finalize"),
        ("POST", "/meetings/m%00/chunks/mic/0/retry"),
        ("POST", f"/meetings/{meeting}/chunks/mic%00/0/retry"),
        ("DELETE", "/webhooks/w%00"),
        ("GET", "/webhooks/w%00/deliveries"),
        ("HEAD", "/files/abcdefgh%00"),
        ("PATCH", "/files/abcdefgh%00"),
        ("DELETE", "/files/abcdefgh%00"),
    ]:
        response = requests.request(method, base + path, headers=TUS, timeout=30)
        assert response.status_code == 404, (method, path, response.text)
        if method != "HEAD":
            assert response.json()["error"]["code"] in ("ERR_NOT_FOUND", "ERR_UPLOAD_NOT_FOUND")
    # The meeting whose track was asked for with a NUL is untouched.
    assert requests.get(f"{base}/meetings/{meeting}", timeout=30).status_code == 200


def test_a_chunk_whose_meeting_id_holds_nul_names_no_meeting(tus_server) -> None:
    fields = {"meeting_id": "m_" + NUL, "track": "mic", "seq": "0", "start_ms": "0"}
    meta = ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())
    response = tus_create(tus_server.url, 10, meta)
    _assert_error(response, 404, "ERR_MEETING_NOT_FOUND")


def test_a_page_cursor_holding_nul_is_refused(tus_server) -> None:
    cursor = base64.urlsafe_b64encode(f"1.5|m_{NUL}".encode()).decode()
    response = requests.get(f"{tus_server.url}/meetings", params={"after": cursor}, timeout=30)
    _assert_error(response, 400, "ERR_INVALID_FIELD")
