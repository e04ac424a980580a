"""An S3-compatible blob store that cannot serve for now (unreachable, reset, timed out, or
answering 503 SlowDown once the client's retries are spent) is not a fault of the request
that meets it: the request gets 503 ERR_BLOB_STORE_UNAVAILABLE with Retry-After, not 500,
and a transcription job that cannot fetch its chunk is postponed without spending one of
the chunk's attempts (storage/blob_store_outage.py, server/errors.py, transcribe/worker.py).
The store here is the test run's moto server, behind a loopback link the tests cut and
mend; both legs run these (the store is S3 whichever database is under it)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    ReadTimeoutError,
    ResponseStreamingError,
    SSLError,
)
from sqlalchemy import select

from storage.blob_store_outage import blob_store_unavailable
from storage.database import Database
from storage.job_queue import RetryPolicy
from storage.models import Chunk, Event
from storage.state_machine import ChunkState
from tests.blob_stores import BUCKET, s3_endpoint
from tests.conftest import TUS, create_meeting, tus_create, tus_patch
from tests.databases import database_url_for
from tests.in_process_server import InProcessServer
from tests.server_process import free_port
from tests.tcp_link import TcpLink
from tests.test_end_to_end import upload_segment
from transcribe.worker import MAX_OUTAGE_PAUSE_S, Worker, outage_pause_s
from transcribe.worker_config import WorkerSettings


def _client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


def test_unavailable_errors_are_told_apart_from_faults() -> None:
    # botocore's own, from a real client asking a loopback port nobody listens on.
    nobody = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(EndpointConnectionError) as refused:
        nobody.head_bucket(Bucket=BUCKET)
    assert blob_store_unavailable(refused.value)
    url = "http://127.0.0.1:9/b/k"
    assert blob_store_unavailable(ConnectionClosedError(endpoint_url=url))
    assert blob_store_unavailable(ReadTimeoutError(endpoint_url=url))
    assert blob_store_unavailable(ResponseStreamingError(error="cut"))
    assert blob_store_unavailable(_client_error("SlowDown", 503))
    assert blob_store_unavailable(_client_error("InternalError", 500))
    assert blob_store_unavailable(_client_error("RequestTimeout", 400))
    # Faults stay faults: retrying mends none of these.
    assert not blob_store_unavailable(_client_error("NoSuchBucket", 404))
    assert not blob_store_unavailable(_client_error("AccessDenied", 403))
    assert not blob_store_unavailable(_client_error("InvalidPart", 400))
    assert not blob_store_unavailable(SSLError(endpoint_url=url, error="bad certificate"))
    assert not blob_store_unavailable(ConnectionRefusedError(111, "refused"))
    assert not blob_store_unavailable(ValueError("bad"))


def test_the_outage_pause_grows_and_is_bounded() -> None:
    assert [outage_pause_s(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert outage_pause_s(0) == 2.0
    assert outage_pause_s(50) == MAX_OUTAGE_PAUSE_S


@pytest.fixture
def linked_store(tmp_path: Path) -> Iterator[tuple[Path, str, TcpLink]]:
    """A data folder, its blob URL, and the link its S3 store is reached through."""
    endpoint = s3_endpoint()
    link = TcpLink("127.0.0.1", int(endpoint.rsplit(":", 1)[1]))
    link.mend()
    yield tmp_path / "data", f"s3://{BUCKET}/outage-{time.time_ns()}", link
    link.stop()


def _through(link: TcpLink, blob_url: str) -> list[str]:
    return ["--blob-url", blob_url, "--s3-endpoint-url", f"http://127.0.0.1:{link.port}"]


def _one_chunk_and_a_worker(
    data: Path, blob_url: str, link: TcpLink, segment: object
) -> tuple[str, WorkerSettings]:
    """A meeting with one chunk uploaded through the link, and the settings of a worker that
    reaches the store through it, with one attempt per chunk (`--max-attempts 1`)."""
    server = InProcessServer(data, extra=_through(link, blob_url)).start()
    try:
        meeting = create_meeting(server.url, tracks=["mic"])["id"]
        upload_segment(server.url, meeting, "mic", segment, 0)
    finally:
        server.stop()
    settings = WorkerSettings(
        database_url=database_url_for(data),
        data_dir=data,
        blob_url=blob_url,
        s3_endpoint_url=f"http://127.0.0.1:{link.port}",
        cpu_threads=1,
        retry=RetryPolicy(max_attempts=1),
    )
    return meeting, settings


def _assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.json()["error"]["code"] == "ERR_BLOB_STORE_UNAVAILABLE"


def test_requests_get_503_while_the_blob_store_is_away_and_work_again_after(
    linked_store: tuple[Path, str, TcpLink], caplog: pytest.LogCaptureFixture
) -> None:
    data, blob_url, link = linked_store
    server = InProcessServer(data, extra=_through(link, blob_url)).start()
    try:
        body = bytes(range(256)) * 4
        upload = tus_create(server.url, len(body)).headers["Location"]
        assert tus_patch(upload, 0, body[:400]).status_code == 204
        finished = tus_create(server.url, 10).headers["Location"]
        assert tus_patch(finished, 0, b"0123456789").status_code == 204

        link.cut()
        # The offset is the database's: HEAD still answers. Writing the rest (its first 400
        # bytes are read back from the store) and downloading need the store.
        head = requests.head(upload, headers=TUS, timeout=60)
        assert head.status_code == 200 and head.headers["Upload-Offset"] == "400"
        _assert_unavailable(tus_patch(upload, 400, body[400:]))
        _assert_unavailable(requests.get(finished, headers=TUS, timeout=60))
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("ERR_BLOB_STORE_UNAVAILABLE on PATCH" in m for m in caplog.messages)

        link.mend()
        # Nothing acknowledged was lost, and nothing of the refused PATCH was taken.
        head = requests.head(upload, headers=TUS, timeout=60)
        assert head.headers["Upload-Offset"] == "400"
        done = tus_patch(upload, 400, body[400:])
        assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(body))
        assert requests.get(upload, headers=TUS, timeout=60).content == body
        assert requests.get(finished, headers=TUS, timeout=60).content == b"0123456789"
    finally:
        server.stop()


def test_a_job_waits_out_a_blob_store_outage_without_spending_its_attempts(
    linked_store: tuple[Path, str, TcpLink], jfk_segments, caplog: pytest.LogCaptureFixture
) -> None:
    """One attempt per chunk (`--max-attempts 1`): a job that failed for the outage would
    leave its chunk FAILED at once. Postponed twice instead, then transcribed."""
    data, blob_url, link = linked_store
    meeting, settings = _one_chunk_and_a_worker(data, blob_url, link, jfk_segments[3.0][0])
    asyncio.run(_outage_then_transcribed(settings, link, meeting))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("the blob store is unavailable" in m for m in caplog.messages) == 2


async def _chunk(db: Database, meeting: str) -> Chunk:
    async with db.read() as session:
        return (
            await session.execute(select(Chunk).where(Chunk.meeting_id == meeting))
        ).scalar_one()


async def _outage_then_transcribed(settings: WorkerSettings, link: TcpLink, meeting: str) -> None:
    from transcribe.engine import EngineSettings, WhisperEngine

    engine = await asyncio.to_thread(WhisperEngine, EngineSettings(cpu_threads=1))
    worker = Worker(settings, engine=engine)
    await worker.blobs.start()
    db = worker.db
    try:
        link.cut()
        for pause in (2.0, 4.0):
            started = time.monotonic()
            assert await worker.run_one()  # claimed, the fetch failed, postponed; then paused
            assert time.monotonic() - started >= pause - 0.1
            chunk = await _chunk(db, meeting)
            assert chunk.state == ChunkState.QUEUED
            assert chunk.attempts == 0  # the claim's attempt given back
            assert "EndpointConnectionError" in (chunk.error or "")
            assert chunk.lease_owner is None
        # Claimable again 4 s after the second postponement, which the pause just waited.
        link.mend()
        assert await worker.run_one()
        chunk = await _chunk(db, meeting)
        assert chunk.state == ChunkState.TRANSCRIBED and chunk.attempts == 1
        async with db.read() as session:
            retrying = select(Event.payload).where(Event.type == "chunk.retrying")
            payloads = (await session.execute(retrying)).scalars().all()
        assert [p["attempt_counted"] for p in payloads] == [False, False]
    finally:
        await worker.blobs.close()
        await db.close()


def test_a_carrys_flush_waits_out_a_blob_store_outage(
    linked_store: tuple[Path, str, TcpLink], jfk_segments, caplog: pytest.LogCaptureFixture
) -> None:
    """The track's last chunk ends inside speech: its carry, kept in the store, is flushed by
    a tail job once the meeting is finalized. A tail job that cannot fetch the carry leaves
    it due (no attempt spent, the chunk transcribed still) and flushes it after the outage."""
    data, blob_url, link = linked_store
    meeting, settings = _one_chunk_and_a_worker(data, blob_url, link, jfk_segments[3.0][0])
    from transcribe.engine import EngineSettings, WhisperEngine

    engine = WhisperEngine(EngineSettings(cpu_threads=1))
    carried = asyncio.run(_run_one(settings, engine, meeting))
    assert carried.state == ChunkState.TRANSCRIBED and carried.carry_samples > 0
    assert not carried.carry_done  # not finalized yet: its words wait for the next chunk
    server = InProcessServer(data, extra=_through(link, blob_url)).start()
    try:
        finalized = requests.post(
            f"{server.url}/meetings/{meeting}/finalize", json={"last_seq": {"mic": 0}}, timeout=10
        )
        assert finalized.status_code == 200, finalized.text
        started = time.monotonic()
        postponed = asyncio.run(_run_one(settings, engine, meeting, before_claim=link.cut))
        assert time.monotonic() - started >= 2.0 - 0.1  # the worker's pause after it
        assert postponed.state == ChunkState.TRANSCRIBED and postponed.attempts == 1
        assert not postponed.carry_done and postponed.lease_owner is None
        assert requests.get(f"{server.url}/meetings/{meeting}", timeout=10).json()["state"] == (
            "finalizing"
        )
        link.mend()
        time.sleep(max(0.0, (postponed.lease_expires_at or 0) - time.time()))
        flushed = asyncio.run(_run_one(settings, engine, meeting))
        assert flushed.carry_done and flushed.attempts == 1
        view = requests.get(f"{server.url}/meetings/{meeting}", timeout=10).json()
        assert view["state"] == "complete"
        transcript = requests.get(f"{server.url}/meetings/{meeting}/transcript", timeout=10)
        assert "fellow" in transcript.text  # the carried words, said once the store was back
    finally:
        server.stop()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("the blob store is unavailable" in m for m in caplog.messages) == 1


async def _run_one(
    settings: WorkerSettings,
    engine: object,
    meeting: str,
    before_claim: Callable[[], None] | None = None,
) -> Chunk:
    """One claim by a worker with the given engine (`before_claim` run once the worker has
    started, which needs the store); the meeting's one chunk after it."""
    worker = Worker(settings, engine=engine)  # type: ignore[arg-type]
    await worker.blobs.start()
    try:
        if before_claim is not None:
            before_claim()
        assert await worker.run_one()
        return await _chunk(worker.db, meeting)
    finally:
        await worker.blobs.close()
        await worker.db.close()
