"""The recorder page in a real Chromium, its microphone playing known speech: segments are
encoded to Ogg Opus in the page and uploaded with tus-js-client as they close, lines show
before the meeting is finalized, and the final transcript is the reference; a network
drop and a reload mid-recording lose nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests

from tests.browser import chromium, speech_wav
from tests.conftest import REFERENCE, words
from tests.server_process import ServerProcess

# What the page does is the same whatever stores the server's rows (first pass only).
pytestmark = pytest.mark.storage_free


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("browser-rec") / "data", workers=1).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    with chromium(speech_wav(tmp_path_factory.mktemp("speech") / "speech.wav")) as browser:
        yield browser


@pytest.fixture
def page(browser):
    context = browser.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())  # "leave while recording?" and "delete?"
    yield page
    context.close()
    assert not errors, errors


def start_recording(page, server: ServerProcess, segment_s: float, title: str) -> None:
    page.goto(f"{server.url}/app/record?segment={segment_s:g}")
    page.fill("#title", title)
    page.click("#start")
    page.wait_for_selector("#recording:not([hidden])", timeout=15000)


def meeting_of(server: ServerProcess, title: str) -> dict:
    page = requests.get(f"{server.url}/meetings", params={"limit": 100}, timeout=10).json()
    (meeting,) = [m for m in page["meetings"] if m["title"] == title]
    return requests.get(f"{server.url}/meetings/{meeting['id']}", timeout=10).json()


def wait_for(page, condition, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    """Polls `condition`; between polls Playwright runs the page's callbacks (request
    listeners, routes), which a plain sleep would hold back."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        page.wait_for_timeout(250)
    raise AssertionError(f"never: {what}")


def final_words(page, server: ServerProcess, meeting_id: str) -> list[str]:
    """Waits on the meeting page for the final transcript; its words, which must also be
    the API's."""
    page.wait_for_url(f"**/app/meetings/{meeting_id}", timeout=120000)
    page.wait_for_function(
        "document.getElementById('final').textContent === '(final)'", timeout=180000
    )
    api = requests.get(f"{server.url}/meetings/{meeting_id}/transcript", timeout=10).json()
    said = " ".join(s["text"] for s in api["segments"])
    shown = page.inner_text("#lines")
    assert words(said) and all(w in words(shown) for w in words(said))
    return words(said)


def test_recorded_speech_shows_live_and_ends_as_the_reference(page, server):
    start_recording(page, server, 4, "browser live")
    meeting = meeting_of(server, "browser live")
    # Lines on the recorder page while the meeting is still recording.
    wait_for(page, lambda: "fellow" in page.inner_text("#lines").lower(), 60, "live lines")
    assert meeting_of(server, "browser live")["state"] == "recording"
    assert page.get_attribute("#level-mic", "value") is not None
    page.click("#stop")
    assert final_words(page, server, meeting["id"]) == REFERENCE
    view = meeting_of(server, "browser live")
    seqs = [c["seq"] for c in view["chunks"]]
    assert seqs == list(range(len(seqs))) and len(seqs) >= 4 and not view["gaps"]
    assert view["track_labels"] == {"mic": "Microphone", "tab": "Tab audio"}
    # Time comes from captured samples: each 4 s segment starts 4 s after the one before.
    starts = [c["start_ms"] for c in view["chunks"]]
    assert all(b - a == 4000 for a, b in zip(starts, starts[1:], strict=False))


def test_five_seconds_offline_loses_nothing(page, server):
    start_recording(page, server, 3, "browser offline")
    meeting = meeting_of(server, "browser offline")
    wait_for(page, lambda: "1 uploaded" in page.inner_text("#progress"), 30, "a first upload")
    page.context.set_offline(True)
    offline_at = time.monotonic()
    # A segment closes while the network is away: it waits in the browser.
    wait_for(
        page, lambda: "waiting to upload" in page.inner_text("#progress"), 10, "a waiting upload"
    )
    assert "cannot be reached" in page.inner_text("#progress")
    page.wait_for_timeout(max(0.0, 5.0 - (time.monotonic() - offline_at)) * 1000)
    page.context.set_offline(False)
    wait_for(page, lambda: "waiting" not in page.inner_text("#progress"), 60, "uploads catch up")
    # Until the speech is over (it ends 12 s in), then stop.
    wait_for(
        page,
        lambda: meeting_of(server, "browser offline")["chunks"][-1]["start_ms"] >= 12000,
        60,
        "the speech recorded",
    )
    page.click("#stop")
    assert final_words(page, server, meeting["id"]) == REFERENCE
    view = meeting_of(server, "browser offline")
    seqs = [c["seq"] for c in view["chunks"]]
    assert seqs == list(range(len(seqs))) and not view["gaps"]


def test_reload_mid_upload_resumes_it_and_the_meeting_finishes(page, server):
    """The first segment (13 s: all the speech) goes in two PATCHes; the second is cut off
    and the page reloaded: the new page finds the segment in IndexedDB and its upload by
    fingerprint, asks the server for the offset and sends only the rest."""
    requests_seen: list[tuple[str, str]] = []
    page.on("request", lambda r: requests_seen.append((r.method, r.url)))
    patches = {"n": 0}

    def cut_second_patch(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.method == "PATCH":
            patches["n"] += 1
            if patches["n"] >= 2:
                route.abort()
                return
        route.continue_()

    page.route("**/files/**", cut_second_patch)
    start_recording(page, server, 13, "browser reload")
    meeting = meeting_of(server, "browser reload")
    wait_for(page, lambda: patches["n"] >= 2, 40, "the second PATCH")
    upload_url = next(url for method, url in requests_seen if method == "PATCH")
    first = requests.head(upload_url, headers={"Tus-Resumable": "1.0.0"}, timeout=10)
    offset, length = int(first.headers["Upload-Offset"]), int(first.headers["Upload-Length"])
    assert 0 < offset < length  # half there when the page goes
    page.unroute("**/files/**")
    page.reload()
    page.wait_for_selector("#interrupted:not([hidden])", timeout=15000)
    wait_for(
        page,
        lambda: (
            int(
                requests.head(upload_url, headers={"Tus-Resumable": "1.0.0"}, timeout=10).headers[
                    "Upload-Offset"
                ]
            )
            == length
        ),
        30,
        "the upload resumed to its end",
    )
    after_reload = requests_seen[requests_seen.index(("PATCH", upload_url)) :]
    assert ("HEAD", upload_url) in after_reload  # asked for the offset, did not start over
    creations = [url for method, url in requests_seen if method == "POST" and "/files" in url]
    assert len(creations) == 1
    page.click("#finish")
    assert final_words(page, server, meeting["id"]) == REFERENCE
    view = meeting_of(server, "browser reload")
    # The open segment at the reload is what a crash of the tab may lose; nothing else.
    assert [c["seq"] for c in view["chunks"]] == [0] and view["chunks"][0]["length"] == length
