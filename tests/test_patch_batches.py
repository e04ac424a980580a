"""How the tus handler hands a PATCH body to the folder store (server/tus/handler.py,
storage/local_blobs.py): batches of about 1 MiB go to the file while the body still
arrives, and the batch that ends the body goes with the fsync, in one hop. Through the
whole app in this process (`tus_server`), with the store's two kinds of hop recorded."""

from __future__ import annotations

import os
import threading

import pytest
import requests

from server.tus.handler import WRITE_BATCH
from storage.local_blobs import LocalUploadWriter
from tests.blob_stores import on_s3
from tests.conftest import TUS, tus_create, tus_patch

pytestmark = pytest.mark.skipif(on_s3(), reason="the folder store's hops")


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each hop of a writer: ("write", bytes) for a batch sent ahead, ("sync", bytes) for
    the fsync's hop and the bytes it wrote first."""
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()
    real_write, real_sync = LocalUploadWriter._write, LocalUploadWriter._sync

    def write(self: LocalUploadWriter, blocks: list[bytes], at: int, size: int) -> None:
        with lock:
            seen.append(("write", sum(map(len, blocks))))
        real_write(self, blocks, at, size)

    def sync(self: LocalUploadWriter, blocks: list[bytes], at: int) -> None:
        with lock:
            seen.append(("sync", sum(map(len, blocks))))
        real_sync(self, blocks, at)

    monkeypatch.setattr(LocalUploadWriter, "_write", write)
    monkeypatch.setattr(LocalUploadWriter, "_sync", sync)
    return seen


def _patched(server, body: bytes) -> str:
    created = tus_create(server.url, len(body))
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    answer = tus_patch(url, 0, body)
    assert answer.status_code == 204, answer.text
    assert answer.headers["Upload-Offset"] == str(len(body))
    return url


def test_a_body_of_one_batch_costs_one_hop(tus_server, hops) -> None:
    body = os.urandom(WRITE_BATCH)
    url = _patched(tus_server, body)
    assert hops == [("sync", WRITE_BATCH)]
    assert requests.get(url, headers=TUS, timeout=30).content == body


def test_a_long_body_goes_ahead_in_batches_and_ends_with_the_fsync(tus_server, hops) -> None:
    body = os.urandom(3 * WRITE_BATCH + 12_345)
    url = _patched(tus_server, body)
    ahead = [size for kind, size in hops if kind == "write"]
    assert [kind for kind, _ in hops] == ["write"] * len(ahead) + ["sync"]
    # Every batch sent ahead is a full one; what ends the body (less than a batch, or the
    # batch that reaches the declared length) is written by the fsync's hop.
    assert len(ahead) >= 2 and all(size >= WRITE_BATCH for size in ahead)
    assert 0 < hops[-1][1] <= 2 * WRITE_BATCH
    assert sum(size for _, size in hops) == len(body)
    assert requests.get(url, headers=TUS, timeout=30).content == body


def test_a_body_of_unknown_length_keeps_its_last_part_for_the_fsync(tus_server, hops) -> None:
    """Chunked, the handler cannot know a batch is the last: full batches go ahead, the rest
    (what did not fill a batch: maybe nothing, as the reads fell) waits for the end of the
    body and goes with the fsync."""
    body = os.urandom(2 * WRITE_BATCH + 777)
    created = tus_create(tus_server.url, len(body))
    url = created.headers["Location"]
    pieces = (body[i : i + 65_536] for i in range(0, len(body), 65_536))
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    answer = requests.patch(url, data=pieces, headers=headers, timeout=30)
    assert answer.status_code == 204, answer.text
    assert [kind for kind, _ in hops] == ["write"] * (len(hops) - 1) + ["sync"]
    assert all(size >= WRITE_BATCH for _, size in hops[:-1]) and hops[-1][1] < WRITE_BATCH
    assert sum(size for _, size in hops) == len(body)
    assert requests.get(url, headers=TUS, timeout=30).content == body
