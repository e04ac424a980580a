"""A database that cannot serve (down, restarting, out of connections, its lock held past the
busy timeout) gets a request 503 ERR_DATABASE_UNAVAILABLE with Retry-After, not 500: the
client did nothing wrong and should try again (storage/database_outage.py,
server/errors.py). Nothing of such a request is kept, and the server serves again, its
accepted bytes intact, once the database is back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import requests
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from storage.database import Database
from storage.database_outage import DatabaseUnreachable, database_unavailable
from tests.blob_stores import blob_args
from tests.conftest import TUS, create_meeting, tus_create, tus_patch
from tests.databases import POSTGRES, database_url_for, on_postgres
from tests.in_process_server import InProcessServer
from tests.key_helpers import eventually
from tests.tcp_link import TcpLink
from tests.test_end_to_end import upload_segment
from transcribe.worker import Worker
from transcribe.worker_config import WorkerSettings

needs_postgres = pytest.mark.skipif(
    not on_postgres(), reason="a PostgreSQL server to take away (ROLLSCRIBE_TEST_POSTGRES)"
)


def _busy_sqlite_error(tmp_path: Path) -> sqlite3.OperationalError:
    """SQLite's own "database is locked": a second writer that does not wait."""
    path = str(tmp_path / "busy.db")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        return error
    finally:
        other.close()
        holder.close()
    raise AssertionError("the second writer was not refused")


def test_unavailable_errors_are_told_apart_from_faults(tmp_path: Path) -> None:
    busy = _busy_sqlite_error(tmp_path)
    assert database_unavailable(DBAPIError.instance("BEGIN", None, busy, sqlite3.Error))
    assert database_unavailable(PoolTimeout("QueuePool limit of size 20 overflow 10 reached"))
    assert database_unavailable(DatabaseUnreachable("cannot connect"))
    # A lost connection mid-statement: SQLAlchemy marks the error so.
    lost = DBAPIError.instance("SELECT 1", None, ConnectionResetError(), Exception)
    lost.connection_invalidated = True
    assert database_unavailable(lost)
    # Faults stay faults: a constraint, a syntax error, a socket error from elsewhere.
    integrity = sqlite3.connect(":memory:")
    integrity.execute("CREATE TABLE t (x PRIMARY KEY)")
    integrity.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as duplicate:
        integrity.execute("INSERT INTO t VALUES (1)")
    wrapped = DBAPIError.instance("INSERT", None, duplicate.value, sqlite3.Error)
    assert isinstance(wrapped, IntegrityError) and not database_unavailable(wrapped)
    with pytest.raises(sqlite3.OperationalError) as syntax:
        integrity.execute("SELEC 1")
    assert not database_unavailable(DBAPIError.instance("SELEC", None, syntax.value, sqlite3.Error))
    integrity.close()
    assert not database_unavailable(ConnectionRefusedError(111, "refused"))
    assert not database_unavailable(ValueError("bad"))


@needs_postgres
def test_a_role_out_of_connections_is_unavailable() -> None:
    """PostgreSQL's own refusal (53300, too many connections), through storage's engine."""
    asyncio.run(_out_of_connections())


async def _out_of_connections() -> None:
    role = "t_limited_" + uuid.uuid4().hex[:8]
    admin = await asyncpg.connect(POSTGRES.replace("+asyncpg", "") + "/postgres")
    try:
        await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'x' CONNECTION LIMIT 0")
        url = make_url(POSTGRES + "/postgres").set(username=role, password="x")
        db = Database(url.render_as_string(hide_password=False))
        try:
            with pytest.raises(DBAPIError) as refused:
                await db.ping()
            assert getattr(refused.value.orig, "sqlstate", None) == "53300"
            assert database_unavailable(refused.value)
        finally:
            await db.close()
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


@pytest.fixture
def linked_server(tmp_path: Path) -> Iterator[tuple[InProcessServer, TcpLink]]:
    data = tmp_path / "data"
    url = make_url(database_url_for(data))  # the test database, made now
    link = TcpLink(url.host or "127.0.0.1", url.port or 5432)
    link.mend()
    through_link = url.set(host="127.0.0.1", port=link.port).render_as_string(False)
    server = InProcessServer(
        data, extra=["--database-url", through_link, "--sweep-interval-seconds", "0.2"]
    )
    server.start()
    yield server, link
    server.stop()
    link.stop()


def _assert_unavailable(response: requests.Response, with_body: bool = True) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "2"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    if with_body:
        assert response.json()["error"]["code"] == "ERR_DATABASE_UNAVAILABLE"


@needs_postgres
def test_requests_get_503_while_the_database_is_away_and_work_again_after(
    linked_server: tuple[InProcessServer, TcpLink], caplog: pytest.LogCaptureFixture
) -> None:
    server, link = linked_server
    meeting = create_meeting(server.url)["id"]
    body = bytes(range(256)) * 4
    created = tus_create(server.url, len(body))
    assert created.status_code == 201, created.text
    upload = created.headers["Location"]
    assert tus_patch(upload, 0, body[:400]).status_code == 204

    link.cut()
    _assert_unavailable(requests.head(upload, headers=TUS, timeout=30), with_body=False)
    _assert_unavailable(tus_patch(upload, 400, body[400:]))
    _assert_unavailable(tus_create(server.url, 10))
    _assert_unavailable(requests.post(f"{server.url}/meetings", json={}, timeout=30))
    _assert_unavailable(requests.get(f"{server.url}/meetings/{meeting}", timeout=30))
    # The recovery sweep meets the outage too: a warning line, not a fault's traceback.
    eventually(lambda: any("sweep: the database is unavailable" in m for m in caplog.messages))
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

    link.mend()
    # What was accepted before is there, and nothing of the refused PATCH.
    head = requests.head(upload, headers=TUS, timeout=30)
    assert head.status_code == 200 and head.headers["Upload-Offset"] == "400"
    done = tus_patch(upload, 400, body[400:])
    assert done.status_code == 204 and done.headers["Upload-Offset"] == str(len(body))
    downloaded = requests.get(upload, headers=TUS, timeout=30)
    assert downloaded.status_code == 200, downloaded.text
    assert downloaded.content == body
    assert requests.get(f"{server.url}/meetings/{meeting}", timeout=30).status_code == 200
    assert create_meeting(server.url)["id"] != meeting


@needs_postgres
def test_a_live_stream_outlives_a_database_outage(
    linked_server: tuple[InProcessServer, TcpLink], caplog: pytest.LogCaptureFixture
) -> None:
    """The stream stays open (keepalives need no database), the event feed says the outage
    began in one warning (it polled with a traceback every 0.25 s before), and the stream
    carries what is logged once the database is back."""
    caplog.set_level(logging.INFO, logger="rollscribe.event_feed")
    server, link = linked_server
    meeting = create_meeting(server.url)["id"]
    lines: list[bytes] = []

    def listen() -> None:
        url = f"{server.url}/meetings/{meeting}/events"
        with contextlib.suppress(requests.RequestException):
            with requests.get(url, stream=True, timeout=60) as stream:
                for line in stream.iter_lines():
                    lines.append(line)

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    eventually(lambda: b"event: meeting.progress" in lines)
    link.cut()
    began = "reading new events: the database is unavailable"
    eventually(lambda: any(began in m for m in caplog.messages))
    time.sleep(1.0)  # four more polls of the feed, each meeting the outage
    assert sum(began in m for m in caplog.messages) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    link.mend()
    eventually(lambda: any("reading new events again" in m for m in caplog.messages))
    # Finalized with nothing uploaded: its events reach the stream that was open throughout.
    finalize = requests.post(
        f"{server.url}/meetings/{meeting}/finalize", json={"last_seq": {}}, timeout=30
    )
    assert finalize.status_code in (200, 202), finalize.text
    eventually(lambda: b"event: meeting.finalizing" in lines, timeout_s=10)
    assert listener.is_alive()


@needs_postgres
def test_a_worker_waits_out_the_database_and_keeps_its_transcription(
    tmp_path: Path, jfk_segments, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker reaches PostgreSQL through a link cut twice: while it looks for work (it
    used to exit, and be restarted, for as long as the outage lasted) and while it
    transcribes (the result used to be lost with the process, and the chunk run again,
    an attempt spent). It stays up, and the job is committed once, by its first attempt."""
    data = tmp_path / "data"
    url = make_url(database_url_for(data))
    link = TcpLink(url.host or "127.0.0.1", url.port or 5432)
    link.mend()
    server = InProcessServer(data).start()  # its own way to PostgreSQL, never cut
    try:
        meeting = create_meeting(server.url, tracks=["mic"])["id"]
        store = blob_args(data)  # the server's blob store: --blob-url, --s3-endpoint-url
        settings = WorkerSettings(
            database_url=url.set(host="127.0.0.1", port=link.port).render_as_string(False),
            data_dir=data,
            blob_url=store[1] if store else None,
            s3_endpoint_url=store[3] if store else None,
            cpu_threads=1,
        )
        outcome = asyncio.run(
            _worker_through_outages(settings, link, server.url, meeting, jfk_segments[11.0][0])
        )
    finally:
        server.stop()
        link.stop()
    assert outcome["state"] == "transcribed" and outcome["attempts"] == 1
    assert "fellow" in outcome["text"].lower()
    assert any("the database is unavailable" in m for m in caplog.messages)
    assert any("its commit waits" in m for m in caplog.messages)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def _finalized_transcript(base: str, meeting: str) -> dict:
    finalize = requests.post(
        f"{base}/meetings/{meeting}/finalize", json={"last_seq": {"mic": 0}}, timeout=30
    )
    assert finalize.status_code in (200, 202), finalize.text
    eventually(
        lambda: (
            requests.get(f"{base}/meetings/{meeting}", timeout=30).json()["state"] == "complete"
        ),
        timeout_s=30,
    )
    return requests.get(f"{base}/meetings/{meeting}/transcript", timeout=30).json()


async def _worker_through_outages(
    settings: WorkerSettings, link: TcpLink, base: str, meeting: str, segment: object
) -> dict:
    from transcribe.engine import EngineSettings, WhisperEngine

    engine = await asyncio.to_thread(WhisperEngine, EngineSettings(cpu_threads=1))
    worker = Worker(settings, engine=engine)
    running = asyncio.create_task(worker.run())

    def chunk() -> dict:
        view = requests.get(f"{base}/meetings/{meeting}", timeout=30).json()
        return view["chunks"][0] if view["chunks"] else {}

    try:
        await asyncio.sleep(1.0)  # started: the schema checked, polling an empty queue
        link.cut()
        await asyncio.sleep(3.0)  # claims meet the outage: pauses of 2 s, then 4 s
        assert not running.done()
        await asyncio.to_thread(upload_segment, base, meeting, "mic", segment, 0)
        link.mend()
        # Claimed once the pause is over; cut again while it transcribes (seconds of work).
        deadline = time.monotonic() + 30
        while (await asyncio.to_thread(chunk)).get("state") != "transcribing":
            assert time.monotonic() < deadline, "the worker never claimed the chunk"
            await asyncio.sleep(0.05)
        link.cut()
        await asyncio.sleep(6.0)  # the transcription ends; its commit waits
        assert (await asyncio.to_thread(chunk))["state"] == "transcribing"
        link.mend()
        deadline = time.monotonic() + 30
        while (found := await asyncio.to_thread(chunk)).get("state") != "transcribed":
            assert time.monotonic() < deadline, f"never committed: {found}"
            await asyncio.sleep(0.2)
        transcript = await asyncio.to_thread(_finalized_transcript, base, meeting)
        return {**found, "text": " ".join(s["text"] for s in transcript["segments"])}
    finally:
        worker.stopping.set()
        await asyncio.wait_for(running, 30)
