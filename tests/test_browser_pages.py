"""The meetings list and the meeting page in a real Chromium: paging and the state filter,
the live transcript, downloads, Retry on a failed chunk, Delete (and its refusal while a
chunk is written), a phone-width screen, the keyboard, and API keys (a wrong key is told
so; another key's meetings never show)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.blob_stores import put_blob, take_blob
from tests.browser import speaking_browser  # noqa: F401 (the `browser` fixture)
from tests.conftest import TUS, create_meeting, metadata, tus_create, tus_patch, words
from tests.server_process import ServerProcess
from tests.test_end_to_end import upload_segment, wait_state

# The pages read the API, whose storage is tested on both databases elsewhere.
pytestmark = pytest.mark.storage_free

KEY_A = "browser-key-a-0123456789"
KEY_B = "browser-key-b-0123456789"
EMPTY_MEETINGS = 21  # with the two below: two pages of 20


@dataclass
class Seeded:
    server: ServerProcess
    done: str  # a complete meeting: jfk in 5 s segments, the middle one never sent (a gap)
    broken: str  # its only chunk failed (its bytes were gone); the bytes are back now
    broken_upload: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, jfk_segments) -> Iterator[Seeded]:
    data = tmp_path_factory.mktemp("browser-pages") / "data"
    server = ServerProcess(data, workers=0).start()
    base = server.url
    broken = create_meeting(base, title="broken", tracks=["mic"])["id"]
    url = upload_segment(base, broken, "mic", jfk_segments[5.0][0], 0)
    upload_id = url.rsplit("/", 1)[1]
    kept = take_blob(data, upload_id)
    server.stop()
    server = ServerProcess(
        data,
        workers=1,
        port=server.port,
        extra=[
            *("--max-attempts", "1"),
            *("--missing-grace-seconds", "2", "--sweep-interval-seconds", "0.5"),
        ],
    )
    server.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            view = requests.get(f"{base}/meetings/{broken}", timeout=10).json()
            if view["chunks"][0]["state"] == "failed":
                break
            time.sleep(0.2)
        assert view["chunks"][0]["state"] == "failed"
        put_blob(data, upload_id, kept)
        done = create_meeting(base, title="done", tracks=["mic"])["id"]
        segments = jfk_segments[5.0]
        for s in segments:
            if s.seq != 1:
                upload_segment(base, done, "mic", s, s.start_ms)
        requests.post(
            f"{base}/meetings/{done}/finalize",
            json={"last_seq": {"mic": len(segments) - 1}},
            timeout=10,
        )
        wait_state(base, done, "complete")
        for i in range(EMPTY_MEETINGS):
            create_meeting(base, title=f"empty {i:02d}", tracks=["mic"])
        yield Seeded(server, done, broken, upload_id)
    finally:
        server.stop()


@pytest.fixture
def new_page(browser):
    contexts = []
    errors: list[str] = []

    def make(**options):  # type: ignore[no-untyped-def]
        context = browser.new_context(accept_downloads=True, **options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: d.accept())
        return page

    yield make
    for context in contexts:
        context.close()
    assert not errors, errors


def titles(page) -> list[str]:  # type: ignore[no-untyped-def]
    return page.locator("#meetings tbody tr td:first-child").all_inner_texts()


def test_list_pages_newest_first_filters_by_state_and_opens_a_meeting(seeded, new_page):
    page = new_page()
    page.goto(seeded.server.url + "/")
    page.wait_for_selector("#meetings tbody tr")
    first = titles(page)
    assert len(first) == 20 and first[0] == "empty 20" and first[1] == "empty 19"
    page.click("#more")
    page.wait_for_function("document.querySelectorAll('#meetings tbody tr').length > 20")
    every = titles(page)
    assert every[-2:] == ["done", "broken"] and len(every) == EMPTY_MEETINGS + 2
    assert page.is_hidden("#more")
    page.select_option("#state", "complete")
    page.wait_for_function("document.querySelectorAll('#meetings tbody tr').length === 1")
    assert titles(page) == ["done"]
    row = page.locator("#meetings tbody tr").first.inner_text()
    assert "complete" in row and "00:1" in row  # 11 s of audio
    page.click("#meetings a:text-is('done')")
    page.wait_for_url(f"**/app/meetings/{seeded.done}")
    page.wait_for_function("document.getElementById('final').textContent === '(final)'")
    assert "fellow" in page.inner_text("#lines").lower()
    assert page.locator("#strips .strip .chunk.transcribed").count() == 2
    assert page.locator("#strips .strip .chunk.gap").get_attribute("aria-label") == "mic #1: gap"
    assert page.inner_text("#state") == "complete"


def test_downloads_are_the_transcript_in_each_format(seeded, new_page):
    page = new_page()
    page.goto(f"{seeded.server.url}/app/meetings/{seeded.done}")
    page.wait_for_selector("#meeting:not([hidden])")
    for fmt in ("txt", "srt", "vtt", "json"):
        with page.expect_download() as download:
            page.click(f"#downloads [data-format={fmt}]")
        assert download.value.suggested_filename == f"{seeded.done}.{fmt}"
        got = Path(download.value.path()).read_text()
        expected = requests.get(
            f"{seeded.server.url}/meetings/{seeded.done}/transcript",
            params={"format": fmt},
            timeout=10,
        ).text
        assert got == expected
        assert "fellow" in got.lower()


def test_retry_on_a_failed_chunk_by_keyboard(seeded, new_page):
    page = new_page()
    base = seeded.server.url
    page.goto(f"{base}/app/meetings/{seeded.broken}")
    failed = page.locator("#strips .strip button.chunk.failed")
    failed.wait_for()
    assert "failed" in failed.get_attribute("aria-label")
    failed.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#strips .strip .chunk.transcribed", timeout=120000)
    assert (
        requests.get(f"{base}/meetings/{seeded.broken}", timeout=10).json()["chunks"][0]["state"]
        == "transcribed"
    )
    assert page.inner_text("#final") == "(partial)"
    requests.post(
        f"{base}/meetings/{seeded.broken}/finalize", json={"last_seq": {"mic": 0}}, timeout=10
    )
    page.wait_for_function("document.getElementById('final').textContent === '(final)'")
    assert "fellow" in page.inner_text("#lines").lower()


def test_delete_is_refused_while_a_chunk_is_written_then_removes_the_meeting(seeded, new_page):
    base = seeded.server.url
    meeting = create_meeting(base, title="to delete", tracks=["mic"])["id"]
    created = tus_create(base, 1000, metadata(meeting_id=meeting, track="mic", seq=0, start_ms=0))
    upload = created.headers["Location"]
    assert tus_patch(upload, 0, b"OggS" + bytes(96)).status_code == 204  # half written
    page = new_page()
    page.goto(f"{base}/app/meetings/{meeting}")
    page.wait_for_selector("#meeting:not([hidden])")
    page.click("#delete")
    page.wait_for_function("document.getElementById('action-error').textContent.length > 0")
    page.wait_for_timeout(5500)  # a refresh of the view (every 5 s) keeps it
    assert "being uploaded or transcribed" in page.inner_text("#action-error")
    assert requests.get(f"{base}/meetings/{meeting}", timeout=10).status_code == 200
    assert requests.delete(upload, headers=TUS, timeout=10).status_code == 204
    page.click("#delete")
    page.wait_for_url(seeded.server.url + "/")
    assert requests.get(f"{base}/meetings/{meeting}", timeout=10).status_code == 404
    page.wait_for_selector("#meetings tbody tr")
    assert "to delete" not in titles(page)


def test_phone_width_without_sideways_scrolling(seeded, new_page):
    page = new_page(viewport={"width": 360, "height": 740}, is_mobile=True)
    for path in ("/", f"/app/meetings/{seeded.done}", "/app/record"):
        page.goto(seeded.server.url + path)
        page.wait_for_selector("#meetings:not([hidden]), #meeting:not([hidden]), #setup")
        page.wait_for_timeout(500)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, (path, width)


def test_the_recorder_starts_from_the_keyboard(seeded, new_page):
    page = new_page()
    page.goto(seeded.server.url + "/app/record?segment=3")
    page.wait_for_selector("#microphone option:nth-child(2)", state="attached")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "start":
            break
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.press("Enter")
    page.wait_for_selector("#recording:not([hidden])", timeout=15000)
    assert page.evaluate("document.activeElement.id") == "stop"
    page.keyboard.press("Enter")  # stop at once: a meeting of what little was said
    page.wait_for_url("**/app/meetings/**", timeout=60000)


# ---- with API keys --------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("browser-keyed") / "data",
        workers=1,
        env={"ROLLSCRIBE_API_KEYS": f"{KEY_A},{KEY_B}"},
    ).start()
    yield server
    server.stop()


def test_a_wrong_key_is_told_and_other_keys_meetings_never_show(keyed, new_page):
    base = keyed.url
    mine = create_keyed(base, KEY_A, "meeting of A")
    theirs = create_keyed(base, KEY_B, "meeting of B")
    page = new_page()
    page.goto(base + "/")
    page.wait_for_selector("form.key")
    assert page.inner_text("form.key .error") == "This server needs an API key."
    page.fill("#api-key", "not-a-key-0123456789")
    page.press("#api-key", "Enter")
    page.wait_for_function(
        "document.querySelector('form.key .error')?.textContent.includes('refused this key')"
    )
    page.fill("#api-key", KEY_A)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#meetings tbody tr")
    assert titles(page) == ["meeting of A"]
    # The key is kept for this tab: the meeting page and its live stream use it.
    page.click("#meetings a:text-is('meeting of A')")
    page.wait_for_url(f"**/app/meetings/{mine}")
    page.wait_for_function("document.getElementById('live').textContent === 'live'")
    page.goto(f"{base}/app/meetings/{theirs}")
    page.wait_for_function(
        "document.getElementById('message').textContent.includes('No such meeting')"
    )
    assert page.is_hidden("#meeting")


def test_recording_with_a_key_reaches_the_keys_meeting(keyed, new_page):
    page = new_page()
    page.goto(keyed.url + "/")
    page.wait_for_selector("form.key")
    page.fill("#api-key", KEY_B)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#meetings tbody tr, #message:has-text('No meetings')")
    page.goto(keyed.url + "/app/record?segment=3")
    page.fill("#title", "keyed recording")
    page.wait_for_selector("#microphone option:nth-child(2)", state="attached")
    page.click("#start")
    page.wait_for_selector("#recording:not([hidden])", timeout=15000)
    page.wait_for_function("document.getElementById('live').textContent === 'live'")
    page.wait_for_function(
        "/fellow/i.test(document.getElementById('lines').textContent)", timeout=90000
    )
    page.click("#stop")
    page.wait_for_url("**/app/meetings/**", timeout=60000)
    meeting_id = page.url.rsplit("/", 1)[1]
    page.wait_for_function(
        "document.getElementById('final').textContent === '(final)'", timeout=120000
    )
    said = requests.get(
        f"{keyed.url}/meetings/{meeting_id}/transcript",
        headers={"Authorization": f"Bearer {KEY_B}"},
        timeout=10,
    ).json()
    assert "fellow" in words(" ".join(s["text"] for s in said["segments"]))
    other = requests.get(
        f"{keyed.url}/meetings/{meeting_id}",
        headers={"Authorization": f"Bearer {KEY_A}"},
        timeout=10,
    )
    assert other.status_code == 404


def create_keyed(base: str, key: str, title: str) -> str:
    r = requests.post(
        base + "/meetings",
        json={"title": title, "tracks": ["mic"]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])
