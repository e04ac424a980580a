from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import jiwer
import pytest
import requests

from tests.databases import drop_made_databases, on_postgres
from tests.in_process_server import InProcessServer
from tests.server_process import JFK, ServerProcess

TUS = {"Tus-Resumable": "1.0.0"}
# ../shared/data/jfk.flac, as its README gives it, in lowercase words.
REFERENCE = (
    "and so my fellow americans ask not what your country can do for you "
    "ask what you can do for your country"
).split()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def assert_heard_whole(said: list[str], reference: list[str]) -> None:
    """Every word of `reference` heard once, in order: no word missing (lost audio) and
    none extra (audio sent twice). One word may come back spelled as another ("as" for
    "ask"): where a live capture starts moves by a few milliseconds from run to run, and
    tiny.en's reading of one short word moves with it; a lost or doubled stretch of audio
    shows as missing or extra words, which this never allows."""
    heard = jiwer.process_words(" ".join(reference), " ".join(said))
    assert heard.deletions == 0 and heard.insertions == 0, (said, reference)
    assert heard.substitutions <= 1, (said, reference)


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def metadata(**values: object) -> str:
    return ",".join(f"{k} {b64(str(v))}" for k, v in values.items())


# What the protocol tests' servers run with: short expiry and read timeouts, 64 MiB uploads.
PROTOCOL_ARGS = [
    "--upload-expiry-seconds",
    "3",
    "--read-timeout-seconds",
    "4",
    "--max-upload-bytes",
    str(64 * 1024 * 1024),
    "--cors-origins",
    "http://app.example",
]


@pytest.fixture(scope="session")
def tus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    """The app in this process (the tus protocol tests' fast path): no server process."""
    server = InProcessServer(tmp_path_factory.mktemp("tus") / "data", extra=PROTOCOL_ARGS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def protocol_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with no transcription workers: fast, for protocol and API tests."""
    data = tmp_path_factory.mktemp("protocol") / "data"
    server = ServerProcess(data, workers=0, extra=PROTOCOL_ARGS).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def transcribing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server with one Whisper worker, shared by every end-to-end test."""
    data = tmp_path_factory.mktemp("e2e") / "data"
    server = ServerProcess(data, workers=1).start()
    yield server
    server.stop()


class SegmentCache(dict):  # type: ignore[type-arg]
    """jfk.flac encoded to Ogg Opus segments, keyed by segment length, made once."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root

    def __missing__(self, seconds: float) -> list:
        from codec.segmenter import encode_segments

        out = self.root / f"s{seconds}"
        out.mkdir()
        self[seconds] = encode_segments(JFK, out, seconds)
        return self[seconds]


@pytest.fixture(scope="session")
def jfk_segments(tmp_path_factory: pytest.TempPathFactory) -> SegmentCache:
    return SegmentCache(tmp_path_factory.mktemp("segments"))


def create_meeting(base_url: str, **body: object) -> dict:
    response = requests.post(base_url + "/meetings", json=body, timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()


def tus_create(
    base_url: str, length: int | None, meta: str | None = None, **headers: str
) -> requests.Response:
    h = dict(TUS)
    if length is not None:
        h["Upload-Length"] = str(length)
    if meta is not None:
        h["Upload-Metadata"] = meta
    h.update(headers)
    return requests.post(base_url + "/files/", headers=h, timeout=10)


def tus_patch(url: str, offset: int, body: bytes, **headers: str) -> requests.Response:
    h = {**TUS, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"}
    h.update(headers)
    return requests.patch(url, data=body, headers=h, timeout=30)


def read_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(scope="session")
def whisper_engine():
    """The one Whisper model loaded in the test process, shared by every in-process test."""
    from transcribe.engine import EngineSettings, WhisperEngine

    return WhisperEngine(EngineSettings(cpu_threads=2))


@pytest.fixture(scope="session")
def jfk_audio():
    from codec.decode import decode_to_16k_mono

    return decode_to_16k_mono(JFK)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Every server and fixture is stopped by now: the session's PostgreSQL databases go."""
    if on_postgres():
        drop_made_databases()
