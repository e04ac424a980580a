"""The S3-compatible blob store against a real S3 API (moto's server, which enforces S3's
5 MiB part floor): multipart parts across PATCHes, leftovers of dead requests, rollback,
a completion whose commit failed, lost bytes, deletion, and a server running on it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
import requests
from tusclient import client as tus_client

from storage.blob_store import BlobLost, BlobUnavailable, blob_store_for
from storage.local_blobs import LocalBlobStore
from storage.s3_blobs import S3BlobStore
from tests.blob_stores import BUCKET, s3_client, s3_endpoint
from tests.conftest import TUS, tus_create
from tests.server_process import ROOT, ServerProcess

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part: the fewest bytes that still cross part boundaries


def _payload(size: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _store(tmp_path: Path) -> S3BlobStore:
    s3_endpoint()  # moto up, bucket made, credentials in the environment
    prefix = "unit-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]
    return S3BlobStore(BUCKET, prefix, tmp_path / "tmp", endpoint_url=s3_endpoint(), part_size=PART)


def _run(tmp_path: Path, body: Callable[[S3BlobStore], Awaitable[None]]) -> None:
    async def main() -> None:
        store = _store(tmp_path)
        await store.start()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


async def _write(store: S3BlobStore, upload_id: str, offset: int, data: bytes, final: bool) -> int:
    """One PATCH: open at the committed offset, write in 1 MiB blocks, sync. Returns the
    new committed offset."""
    writer = await store.open_writer(upload_id, offset)
    for i in range(0, len(data), MIB):
        await writer.write(data[i : i + MIB])
    await writer.sync(final=final)
    await writer.close()
    return offset + len(data)


async def _content(store: S3BlobStore, upload_id: str) -> bytes:
    return b"".join([d async for d in store.stream(upload_id, 1 << 40)])


def _keys(store: S3BlobStore, upload_id: str) -> list[str]:
    found = s3_client().list_objects_v2(Bucket=BUCKET, Prefix=store.key(upload_id))
    return sorted(o["Key"].rsplit("/", 1)[1] for o in found.get("Contents", []))


def _open_multiparts(store: S3BlobStore, upload_id: str) -> int:
    found = s3_client().list_multipart_uploads(Bucket=BUCKET, Prefix=store.key(upload_id))
    return len(found.get("Uploads", []))


def test_patches_across_part_boundaries_make_one_object(tmp_path):
    data = _payload(12 * MIB + 123)
    # Commits mid-part, exactly on a boundary, and mid-part again.
    cuts = [0, 3 * MIB + 7, 5 * MIB, 9 * MIB + 1, len(data)]

    async def body(store: S3BlobStore) -> None:
        await store.create("upload-parts", len(data))
        for first, end in zip(cuts, cuts[1:], strict=False):
            await _write(store, "upload-parts", first, data[first:end], end == len(data))
            if end < len(data):
                with pytest.raises(BlobUnavailable):  # S3 cannot read unfinished parts
                    await _content(store, "upload-parts")
        assert await _content(store, "upload-parts") == data
        # Only the object is left: no `.part.<k>` or `.multipart` objects, no open upload.
        assert _keys(store, "upload-parts") == ["upload-parts"]
        assert _open_multiparts(store, "upload-parts") == 0
        head = s3_client().head_object(Bucket=BUCKET, Key=store.key("upload-parts"))
        assert head["ETag"].endswith('-3"')  # assembled from three multipart parts
        async with store.local_copy("upload-parts") as path:
            assert path.read_bytes() == data
        assert not path.exists()

    _run(tmp_path, body)


def test_small_upload_never_starts_a_multipart_upload(tmp_path):
    async def body(store: S3BlobStore) -> None:
        await store.create("upload-small", 300_000)
        offset = await _write(store, "upload-small", 0, b"a" * 100_000, False)
        assert _keys(store, "upload-small") == ["upload-small.part.0"]
        await _write(store, "upload-small", offset, b"b" * 200_000, True)
        assert await _content(store, "upload-small") == b"a" * 100_000 + b"b" * 200_000
        assert _keys(store, "upload-small") == ["upload-small"]
        assert _open_multiparts(store, "upload-small") == 0
        await store.create("upload-empty", 0)
        assert await _content(store, "upload-empty") == b""

    _run(tmp_path, body)


def test_dead_request_leftovers_are_overwritten_not_kept(tmp_path):
    good = _payload(11 * MIB, 1)
    junk = _payload(11 * MIB, 2)
    committed = 2 * MIB

    async def body(store: S3BlobStore) -> None:
        await store.create("upload-dead", len(good))
        await _write(store, "upload-dead", 0, good[:committed], False)
        # A PATCH that wrote and synced two parts of other bytes, then died before its
        # offset commit: its part 1, part 2 and `.part.2` are leftovers.
        await _write(store, "upload-dead", committed, junk[committed:], False)
        await _write(store, "upload-dead", committed, good[committed:], True)
        assert await _content(store, "upload-dead") == good
        assert _open_multiparts(store, "upload-dead") == 0

    _run(tmp_path, body)


def test_rollback_drops_bytes_past_the_commit(tmp_path):
    data = _payload(7 * MIB, 3)

    async def body(store: S3BlobStore) -> None:
        await store.create("upload-back", len(data))
        await _write(store, "upload-back", 0, data[:MIB], False)
        writer = await store.open_writer("upload-back", MIB, "sha1")
        await writer.write(b"x" * MIB)
        await writer.rollback(MIB)  # same part: the buffer is cut
        await writer.write(b"y" * 5 * MIB)  # a whole part of wrong bytes goes up
        await writer.rollback(MIB)  # another part: state reloaded from the store
        assert writer.written == 0
        await writer.write(data[MIB:])
        await writer.sync(final=True)
        await writer.close()
        assert await _content(store, "upload-back") == data

    _run(tmp_path, body)


def test_completion_whose_commit_failed_resumes_from_the_object(tmp_path):
    data = _payload(12 * MIB, 4)
    committed = 6 * MIB + 5

    async def body(store: S3BlobStore) -> None:
        await store.create("upload-redo", len(data))
        await _write(store, "upload-redo", 0, data[:committed], False)
        # The last PATCH completed the object, then its offset commit failed: the
        # database still says `committed`, and the client sends the rest again.
        await _write(store, "upload-redo", committed, data[committed:], True)
        assert _keys(store, "upload-redo") == ["upload-redo"]
        await _write(store, "upload-redo", committed, data[committed:], True)
        assert await _content(store, "upload-redo") == data
        assert _open_multiparts(store, "upload-redo") == 0

    _run(tmp_path, body)


def test_lost_acknowledged_bytes_are_reported_not_papered_over(tmp_path):
    async def body(store: S3BlobStore) -> None:
        await store.create("upload-lost", 1000)
        await _write(store, "upload-lost", 0, b"z" * 400, False)
        s3_client().delete_object(Bucket=BUCKET, Key=store.partial_key("upload-lost", 0))
        with pytest.raises(BlobLost):
            await store.open_writer("upload-lost", 400)

    _run(tmp_path, body)


def test_delete_aborts_the_multipart_upload_and_reclaims_everything(tmp_path):
    async def body(store: S3BlobStore) -> None:
        await store.create("upload-gone", 20 * MIB)
        await _write(store, "upload-gone", 0, _payload(6 * MIB, 5), False)
        assert _open_multiparts(store, "upload-gone") == 1
        assert await store.delete("upload-gone") == 0  # no finished object yet
        assert _keys(store, "upload-gone") == []
        assert _open_multiparts(store, "upload-gone") == 0
        await store.create("upload-done", 3)
        await _write(store, "upload-done", 0, b"abc", True)
        assert await store.delete("upload-done") == 3
        assert await store.delete("upload-done") == 0  # twice is harmless

    _run(tmp_path, body)


def test_concatenation_and_carries(tmp_path):
    a, b = _payload(6 * MIB, 6), b"tail"

    async def body(store: S3BlobStore) -> None:
        for name, part in (("part-a-01", a), ("part-b-01", b)):
            await store.create(name, len(part))
            await _write(store, name, 0, part, True)
        await store.create("final-ab-01", None)
        assert await store.concatenate("final-ab-01", ["part-a-01", "part-b-01"]) == len(a + b)
        assert await _content(store, "final-ab-01") == a + b
        samples = np.linspace(-1, 1, 16000, dtype=np.float32)
        name = await store.write_carry(42, samples)
        assert np.array_equal(await store.read_carry(name), samples)

    _run(tmp_path, body)


# ---- a server on S3 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("s3") / "data"
    blob = ["--blob-url", f"s3://{BUCKET}/server", "--s3-endpoint-url", s3_endpoint()]
    server = ServerProcess(data, workers=0, extra=blob).start()
    yield server
    server.stop()


def test_tuspy_upload_of_many_parts_through_the_server(s3_server):
    data = _payload(13 * MIB, 7)
    source = s3_server.data_dir.parent / "big.bin"
    source.write_bytes(data)
    uploader = tus_client.TusClient(s3_server.url + "/files/").uploader(
        str(source), chunk_size=3 * MIB, metadata={"filename": "big.bin"}
    )
    uploader.upload()
    got = requests.get(uploader.url, headers=TUS, timeout=60)
    assert got.status_code == 200 and got.content == data
    upload_id = uploader.url.rsplit("/", 1)[1]
    head = s3_client().head_object(Bucket=BUCKET, Key=f"server/uploads/{upload_id}")
    assert head["ContentLength"] == len(data)


def test_download_of_an_unfinished_upload_is_a_clear_error(s3_server):
    url = tus_create(s3_server.url, 100).headers["Location"]
    r = requests.patch(
        url,
        data=b"x" * 40,
        headers={**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        timeout=10,
    )
    assert r.status_code == 204
    got = requests.get(url, headers=TUS, timeout=10)
    assert got.status_code == 400
    assert got.json()["error"]["code"] == "ERR_INCOMPLETE_UPLOAD"
    assert requests.head(url, headers=TUS, timeout=10).headers["Upload-Offset"] == "40"


def test_readyz_says_when_the_bucket_is_gone(tmp_path):
    s3_client().create_bucket(Bucket="readyz-bucket")
    blob = ["--blob-url", "s3://readyz-bucket/x", "--s3-endpoint-url", s3_endpoint()]
    server = ServerProcess(tmp_path / "data", workers=0, extra=blob).start()
    try:
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["checks"]["blob_store"] == "ok"
        s3_client().delete_bucket(Bucket="readyz-bucket")
        ready = requests.get(server.url + "/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["blob_store"].startswith("unusable")
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("blob_url", "expected"),
    [
        ("s3://no-such-bucket-here/x", "cannot use bucket 'no-such-bucket-here'"),
        ("s3:///x", "no bucket in"),
        ("ftp://somewhere/x", "unsupported blob store"),
    ],
)
def test_unusable_blob_store_is_a_clear_error_at_start(tmp_path, blob_url, expected):
    s3_endpoint()
    for command in (["serve", "--port", "0", "--workers", "0"], ["worker"]):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "server.cli",
                *command,
                "--data-dir",
                str(tmp_path),
                "--blob-url",
                blob_url,
                "--s3-endpoint-url",
                s3_endpoint(),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ},
        )
        assert result.returncode == 1, result.stderr
        assert expected in result.stderr and "Traceback" not in result.stderr


def test_folder_urls_choose_the_local_store(tmp_path):
    store = blob_store_for(tmp_path, f"file://{tmp_path}/shared")
    assert isinstance(store, LocalBlobStore)
    assert (tmp_path / "shared" / "uploads").is_dir()
