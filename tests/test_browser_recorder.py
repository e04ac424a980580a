"""The recorder page in a real Chromium, its microphone playing known speech: segments are
encoded to Ogg Opus in the page and uploaded with tus-js-client as they close, lines show
before the meeting is finalized, and the final transcript is the reference; a network
drop and a reload mid-recording lose nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import jiwer
import pytest
import requests

from tests.browser import LEAD_S, speaking_browser  # noqa: F401 (the `browser` fixture)
from tests.conftest import REFERENCE, assert_heard_whole, words
from tests.server_process import ServerProcess

# What the page does is the same whatever stores the server's rows (first pass only).
pytestmark = pytest.mark.storage_free


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("browser-rec") / "data", workers=1).start()
    yield server
    server.stop()


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
    # Lines on the recorder page, and on the meeting's own page in another tab, while the
    # meeting is still recording.
    wait_for(page, lambda: "fellow" in page.inner_text("#lines").lower(), 60, "live lines")
    watcher = page.context.new_page()
    watcher.goto(f"{server.url}/app/meetings/{meeting['id']}")
    watcher.wait_for_function("/fellow/i.test(document.getElementById('lines').textContent)")
    assert watcher.inner_text("#final") == "(partial)"
    assert "Microphone:" in watcher.inner_text("#lines")  # labelled by track, with times
    # The speech begins about a second into the file; when Chromium's fake capture starts
    # playing it, relative to the recording's start, moves by a fraction of a second.
    assert re.match(r"00:0[0-2]Microphone:", watcher.inner_text("#lines"))
    watcher.close()
    assert meeting_of(server, "browser live")["state"] == "recording"
    assert page.get_attribute("#level-mic", "value") is not None
    page.click("#stop")
    assert_heard_whole(final_words(page, server, meeting["id"]), REFERENCE)
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
    assert_heard_whole(final_words(page, server, meeting["id"]), REFERENCE)
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
    assert_heard_whole(final_words(page, server, meeting["id"]), REFERENCE)
    view = meeting_of(server, "browser reload")
    # The open segment at the reload is what a crash of the tab may lose; nothing else.
    assert [c["seq"] for c in view["chunks"]] == [0] and view["chunks"][0]["length"] == length


def test_tab_audio_is_a_second_aligned_track(page, server):
    """With the box ticked, getDisplayMedia's sound (in this Chromium: its fake audio
    device, playing the same speech) is track `tab`, beside the microphone."""
    page.goto(f"{server.url}/app/record?segment=4")
    page.fill("#title", "browser tab")
    page.check("#tab")
    page.click("#start")
    page.wait_for_selector("#recording:not([hidden])", timeout=15000)
    assert page.locator("#level-tab").count() == 1
    meeting = meeting_of(server, "browser tab")
    wait_for(page, lambda: len(meeting_of(server, "browser tab")["chunks"]) >= 8, 60, "chunks")
    page.click("#stop")
    final_words(page, server, meeting["id"])
    view = meeting_of(server, "browser tab")
    assert view["track_labels"] == {"mic": "Microphone", "tab": "Tab audio"}
    starts = {t: [c["start_ms"] for c in view["chunks"] if c["track"] == t] for t in ("mic", "tab")}
    # Same cut points on both (a track whose stream began a moment later may end with one
    # segment fewer at Stop).
    both = min(len(starts["mic"]), len(starts["tab"]))
    assert both >= 4 and starts["mic"][:both] == starts["tab"][:both], starts
    lines = requests.get(f"{server.url}/meetings/{meeting['id']}/transcript", timeout=10).json()
    for track, label in (("mic", "Microphone"), ("tab", "Tab audio")):
        mine = [x for x in lines["segments"] if x["track"] == track]
        assert {x["speaker"] for x in mine} == {label}
        # The same speech on both: each track's words are the reference (tiny.en may hear
        # "American" for "Americans" on one), and both start at the speech, 1 s in.
        said = " ".join(words(" ".join(x["text"] for x in mine)))
        assert jiwer.wer(" ".join(REFERENCE), said) <= 0.15, (track, said)
        assert abs(mine[0]["start"] - LEAD_S) < 0.4, (track, mine[0]["start"])


def test_no_server_at_start_is_said_and_nothing_starts(page, server):
    page.goto(f"{server.url}/app/record?segment=3")
    page.fill("#title", "browser no server")
    page.wait_for_selector("#microphone option:nth-child(2)", state="attached")
    page.context.set_offline(True)
    page.click("#start")
    page.wait_for_function("document.getElementById('message').textContent.length > 0")
    assert page.inner_text("#message") == "The server cannot be reached."
    assert page.is_hidden("#recording") and page.is_enabled("#start")
    page.context.set_offline(False)
    titles = [
        m["title"] for m in requests.get(f"{server.url}/meetings", timeout=10).json()["meetings"]
    ]
    assert "browser no server" not in titles


def test_segments_the_server_refuses_are_said_and_kept(page, server):
    """Someone finalizes the meeting while the page records: later segments are refused
    for good (409), the page says so, keeps them in the browser, and its own finalize is
    refused with the reason."""
    start_recording(page, server, 2, "browser refused")
    meeting = meeting_of(server, "browser refused")
    wait_for(page, lambda: "1 uploaded" in page.inner_text("#progress"), 30, "a first upload")
    r = requests.post(
        f"{server.url}/meetings/{meeting['id']}/finalize",
        json={"last_seq": {"mic": 0}},
        timeout=10,
    )
    assert r.status_code in (200, 202), r.text
    wait_for(page, lambda: "refused" in page.inner_text("#progress"), 30, "a refusal said")
    progress = page.inner_text("#progress")
    assert "The server refused mic segment 1 (409 ERR_" in progress
    # finalized, or already complete: either way the reason, not a raw body
    assert "ERR_SEQ_AFTER_FINALIZE" in progress or "ERR_MEETING_CLOSED" in progress
    assert '{"error"' not in progress
    kept = page.evaluate(
        """() => new Promise((resolve) => {
             const open = indexedDB.open("rollscribe-recorder");
             open.onsuccess = () => {
               const get = open.result.transaction("segments").objectStore("segments").getAll();
               get.onsuccess = () => resolve(get.result.filter((s) => s.failed).map((s) => s.seq));
             };
           })"""
    )
    assert 1 in kept
    page.click("#stop")
    wait_for(
        page, lambda: "refused to finish" in page.inner_text("#message"), 30, "finalize refused"
    )
    assert "ERR_FINALIZE_CONFLICT" in page.inner_text(
        "#message"
    ) or "finalized with" in page.inner_text("#message")


def test_a_browser_without_webcodecs_is_told_before_anything_starts(page, server):
    page.add_init_script("delete window.AudioEncoder")
    page.goto(f"{server.url}/app/record")
    page.wait_for_function("document.getElementById('message').textContent.length > 0")
    assert "cannot encode Opus in the page" in page.inner_text("#message")
    assert page.is_disabled("#start")
