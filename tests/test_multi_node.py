"""Several server nodes and separate worker processes on one database and one shared blob
folder: PATCHes that alternate between nodes, two PATCHes racing on two nodes, a stalled
writer taken over from another node, and a worker killed with SIGKILL. The upload-lock
tests run on SQLite too: there the nodes are processes on one machine sharing the data
folder, as `--processes` runs them (file locks instead of advisory locks)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import requests
from sqlalchemy import select
from tusclient import client as tus_client

from storage.database import Database
from storage.key_usage import add_upload_bytes, upload_bytes_today
from storage.models import Event
from storage.schema import upgrade
from storage.state_machine import record_event
from tests.blob_stores import blob_args
from tests.conftest import REFERENCE, TUS, create_meeting, tus_create, words
from tests.databases import database_url_for, on_postgres
from tests.server_process import ROOT, ServerProcess
from tests.test_end_to_end import wait_state

needs_postgres = pytest.mark.skipif(
    not on_postgres(), reason="several machines need PostgreSQL (ROLLSCRIBE_TEST_POSTGRES)"
)


def _nodes(data_dir: Path, count: int = 2, *extra: str) -> list[ServerProcess]:
    # Same data folder (the shared blob store), same database, different ports.
    return [ServerProcess(data_dir, workers=0, extra=list(extra)).start() for _ in range(count)]


@pytest.fixture
def two_nodes(tmp_path) -> Iterator[list[ServerProcess]]:
    nodes = _nodes(tmp_path / "data")
    yield nodes
    for node in nodes:
        node.stop()


def _on(node: ServerProcess, url: str) -> str:
    """The same upload URL, addressed to another node (as a load balancer would)."""
    return node.url + "/files/" + url.rsplit("/", 1)[1]


def _slow_body(body: bytes, block: int, pause_s: float) -> Iterator[bytes]:
    for i in range(0, len(body), block):
        yield body[i : i + block]
        time.sleep(pause_s)


def _patch(url: str, body: bytes | Iterator[bytes]) -> requests.Response:
    # A generator body goes out chunked, as a streaming client sends it.
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    return requests.patch(url, data=body, headers=headers, timeout=60)


def _download(node: ServerProcess, url: str) -> bytes:
    r = requests.get(_on(node, url), headers=TUS, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def test_two_patches_at_once_on_two_nodes(two_nodes):
    a, b = two_nodes
    length = 1024 * 1024
    created = tus_create(a.url, length)
    assert created.status_code == 201, created.text
    url = created.headers["Location"]
    bodies = {a.url: os.urandom(length), b.url: os.urandom(length)}
    answers: dict[str, requests.Response] = {}

    def send(node: ServerProcess) -> None:
        # Both live writers (a block every 50 ms, ~3 s in all): neither is stalled.
        body = _slow_body(bodies[node.url], 16 * 1024, 0.05)
        answers[node.url] = _patch(_on(node, url), body)

    threads = [threading.Thread(target=send, args=(n,)) for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in answers.values())
    assert statuses[0] == 204 and statuses[1] in (409, 423), {
        k: (r.status_code, r.text) for k, r in answers.items()
    }
    loser = next(r for r in answers.values() if r.status_code != 204)
    assert loser.headers["Content-Type"].startswith("application/json")
    assert loser.json()["error"]["code"] in ("ERR_UPLOAD_LOCKED", "ERR_MISMATCHED_OFFSET")
    winner = next(node for node in (a, b) if answers[node.url].status_code == 204)
    # Every byte is the winner's, read back through either node.
    assert _download(a, url) == bodies[winner.url]
    assert _download(b, url) == bodies[winner.url]
    for node in (a, b):
        head = requests.head(_on(node, url), headers=TUS, timeout=10)
        assert head.headers["Upload-Offset"] == str(length)


def test_stalled_writer_on_one_node_is_taken_over_from_another(two_nodes):
    a, b = two_nodes
    length = 256 * 1024
    url = tus_create(a.url, length).headers["Location"]
    first = os.urandom(64 * 1024)
    stalled: dict[str, requests.Response] = {}

    def stall() -> None:
        def body() -> Iterator[bytes]:
            yield first
            time.sleep(20)  # the client hangs; its socket stays open

        try:
            stalled["r"] = _patch(_on(a, url), body())
        except requests.RequestException as exc:  # the node may close it instead
            stalled["error"] = exc  # type: ignore[assignment]

    t = threading.Thread(target=stall, daemon=True)
    t.start()
    # The stalled PATCH commits what arrived once it sees no byte for 2 s.
    deadline = time.monotonic() + 15
    offset = 0
    while time.monotonic() < deadline and offset != len(first):
        offset = int(requests.head(_on(b, url), headers=TUS, timeout=10).headers["Upload-Offset"])
        time.sleep(0.2)
    assert offset == len(first)
    rest = os.urandom(length - len(first))
    r = requests.patch(
        _on(b, url),
        data=rest,
        headers={
            **TUS,
            "Upload-Offset": str(len(first)),
            "Content-Type": "application/offset+octet-stream",
        },
        timeout=30,
    )
    assert r.status_code == 204, r.text
    assert _download(a, url) == first + rest
    t.join(25)
    if "r" in stalled:
        assert stalled["r"].status_code == 409
        assert stalled["r"].json()["error"]["code"] == "ERR_UPLOAD_TAKEN_OVER"


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        return await connection.fetch(sql)
    finally:
        await connection.close()


def _follow(node: ServerProcess, meeting_id: str, seen: list[tuple[int, str]]) -> None:
    """Server-Sent Events of one meeting, until it completes: (id, type) of each event."""
    url = f"{node.url}/meetings/{meeting_id}/events?until=complete"
    with requests.get(url, stream=True, timeout=240) as response:
        event_id = None
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: ") and event_id is not None:
                seen.append((event_id, line[7:]))
                event_id = None


def _start_worker(data_dir: Path) -> subprocess.Popen[bytes]:
    log = open(data_dir.parent / f"worker-{time.monotonic_ns()}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server.cli",
            "worker",
            "--database-url",
            database_url_for(data_dir),
            "--data-dir",
            str(data_dir),
            "--threads",
            "1",
            "--lease-seconds",
            "3",
            *blob_args(data_dir),
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _upload_alternating(nodes: list[ServerProcess], meeting_id: str, segment) -> None:
    """tuspy uploads one segment in two PATCHes: the first to one node, the second to the
    other, as a load balancer without affinity would send them."""
    first, second = nodes if segment.seq % 2 == 0 else nodes[::-1]
    size = segment.path.stat().st_size
    uploader = tus_client.TusClient(first.url + "/files/").uploader(
        str(segment.path),
        chunk_size=size // 2 + 1,
        metadata={
            "meeting_id": meeting_id,
            "track": "mic",
            "seq": str(segment.seq),
            "start_ms": str(segment.start_ms),
            "filename": segment.path.name,
            "filetype": "audio/ogg",
        },
    )
    uploader.set_url(uploader.create_url())
    uploader.upload_chunk()
    assert 0 < uploader.offset < size
    uploader.set_url(_on(second, uploader.url))
    uploader.upload_chunk()
    assert uploader.offset == size


def _in_flight(node: ServerProcess, meeting_id: str) -> list[tuple[int, int]]:
    """(seq, worker pid) of the meeting's chunks being transcribed, as the node reports them."""
    view = requests.get(f"{node.url}/meetings/{meeting_id}", timeout=10).json()
    return [
        (c["seq"], int(c["worker"].split(":")[1]))
        for c in view["chunks"]
        if c["state"] == "transcribing" and c["worker"]
    ]


def _kill_a_worker_mid_job(
    node: ServerProcess, meetings: list[str]
) -> tuple[int | None, tuple[str, int] | None]:
    """SIGKILL a worker while it holds a job. A job seen in flight may be committed before a
    kill lands (CI run 29 killed a worker just after its commit: the chunk ran once), so the
    worker is stopped first and the job looked at again: a stopped worker commits nothing, and
    after the pause a commit it sent before the stop has been made visible."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for meeting_id in meetings:
            for seq, pid in _in_flight(node, meeting_id):
                os.kill(pid, signal.SIGSTOP)
                time.sleep(0.3)
                if (seq, pid) in _in_flight(node, meeting_id):
                    os.kill(pid, signal.SIGKILL)
                    return pid, (meeting_id, seq)
                os.kill(pid, signal.SIGCONT)
        time.sleep(0.02)
    return None, None


@needs_postgres
@pytest.mark.crash
def test_two_nodes_two_workers_one_killed(tmp_path, jfk_segments):
    data_dir = tmp_path / "data"
    nodes = _nodes(data_dir, 2, "--lease-seconds", "3")
    workers = [_start_worker(data_dir), _start_worker(data_dir)]
    try:
        segments = jfk_segments[3.0]
        meetings = [create_meeting(nodes[i % 2].url, tracks=["mic"])["id"] for i in range(3)]
        # A client following meeting 0 on node B, while its uploads go to both nodes.
        streamed: list[tuple[int, str]] = []
        follower = threading.Thread(
            target=_follow, args=(nodes[1], meetings[0], streamed), daemon=True
        )
        follower.start()
        for segment in segments:
            for meeting_id in meetings:
                _upload_alternating(nodes, meeting_id, segment)
        killed, killed_chunk = _kill_a_worker_mid_job(nodes[1], meetings)
        assert killed in [w.pid for w in workers], "never saw a worker's job in flight"
        for i, meeting_id in enumerate(meetings):
            r = requests.post(
                f"{nodes[i % 2].url}/meetings/{meeting_id}/finalize",
                json={"last_seq": {"mic": len(segments) - 1}},
                timeout=10,
            )
            assert r.status_code == 200, r.text
        for i, meeting_id in enumerate(meetings):
            view = wait_state(nodes[(i + 1) % 2].url, meeting_id, "complete", timeout_s=180)
            assert [c["state"] for c in view["chunks"]] == ["transcribed"] * len(segments)
            transcript = requests.get(
                f"{nodes[i % 2].url}/meetings/{meeting_id}/transcript", timeout=10
            ).json()
            assert words(" ".join(s["text"] for s in transcript["segments"])) == REFERENCE
        # Exactly once: one committed transcription per chunk, whatever was killed.
        rows = asyncio.run(
            _fetch(
                database_url_for(data_dir),
                "SELECT meeting_id, payload::jsonb->>'seq' FROM events"
                " WHERE type = 'chunk.transcribed'",
            )
        )
        done = Counter((m, int(seq)) for m, seq in rows)
        assert done == Counter({(m, s.seq): 1 for m in meetings for s in segments})
        # The follower on node B saw every event of meeting 0's log once, in order, through
        # to completion, whichever node or worker wrote it.
        follower.join(30)
        logged = asyncio.run(
            _fetch(
                database_url_for(data_dir),
                f"SELECT id, type FROM events WHERE meeting_id = '{meetings[0]}' ORDER BY id",
            )
        )
        assert streamed == [(r["id"], r["type"]) for r in logged]
        assert streamed[-1][1] == "meeting.completed"
        # The chunk whose worker was killed ran twice and was committed once.
        assert killed_chunk is not None
        view = requests.get(f"{nodes[0].url}/meetings/{killed_chunk[0]}", timeout=10).json()
        assert next(c for c in view["chunks"] if c["seq"] == killed_chunk[1])["attempts"] == 2
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(20)
        for node in nodes:
            node.stop()


@needs_postgres
def test_event_ids_follow_commit_order(tmp_path):
    """SSE replay and the webhook cursor read `id > last seen`: an event committed later
    must never get a smaller id than one a reader may already have seen."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = database_url_for(data_dir)

    async def run() -> list[str]:
        db = Database(url)
        try:
            await upgrade(db)
            slow_inside = asyncio.Event()
            quick_done = asyncio.Event()

            async def slow() -> None:
                async with db.write() as session:
                    record_event(session, "m1", "test.slow", {})
                    await session.execute(select(1))  # would flush (insert) the event here
                    slow_inside.set()
                    await quick_done.wait()

            async def quick() -> None:
                await slow_inside.wait()
                async with db.write() as session:
                    record_event(session, "m1", "test.quick", {})
                quick_done.set()

            await asyncio.gather(slow(), quick())
            async with db.read() as session:
                return list(
                    (await session.execute(select(Event.type).order_by(Event.id))).scalars()
                )
        finally:
            await db.close()

    assert asyncio.run(run()) == ["test.quick", "test.slow"]


# In this test's database: a backend waiting for an advisory lock (B, at the event-order
# lock) while another sleeps in its COMMIT (A, held there by the test's trigger).
_B_WAITS_WHILE_A_COMMITS = """
    SELECT count(*) FILTER (WHERE wait_event_type = 'Lock' AND wait_event = 'advisory') > 0
        AND count(*) FILTER (WHERE wait_event = 'PgSleep' AND query LIKE '%COMMIT%') > 0
        AS b_waits
    FROM pg_stat_activity WHERE datname = current_database()"""


@needs_postgres
def test_a_transaction_committing_holds_back_every_later_events_insert(tmp_path):
    """Two transactions commit at once: the one whose events got the smaller ids commits
    first, whichever finishes its statements first. Transaction A's COMMIT is held up inside
    PostgreSQL (a deferred trigger on its event sleeps at the commit: its last statement and
    COMMIT are one query, so there is no moment between them to hold it from here); B logs
    an event meanwhile. Without the lock B's event would get the next id and commit first,
    and a reader could see B's id and then never look back for A's."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = database_url_for(data_dir)
    asyncio.run(_upgraded(url))
    # Deferred: it runs at A's COMMIT, after the events' statement took the lock.
    asyncio.run(
        _fetch(
            url,
            """
            CREATE FUNCTION sleep_at_commit() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_sleep(3); RETURN NULL; END $$""",
        )
    )
    asyncio.run(
        _fetch(
            url,
            """
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON events
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.type = 'test.a')
                EXECUTE FUNCTION sleep_at_commit();
            """,
        )
    )
    committed: list[str] = []

    def transaction(name: str) -> None:
        async def run() -> None:
            db = Database(url)
            try:
                async with db.write() as session:
                    record_event(session, "m1", f"test.{name}", {})
                committed.append(name)
            finally:
                await db.close()

        asyncio.run(run())

    a = threading.Thread(target=transaction, args=("a",))
    a.start()
    deadline = time.monotonic() + 30
    while not asyncio.run(
        _fetch(
            url,
            "SELECT 1 FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE '%COMMIT%'",
        )
    ):
        assert time.monotonic() < deadline, "A never reached its COMMIT"
        time.sleep(0.02)
    b = threading.Thread(target=transaction, args=("b",))
    b.start()
    # B's events insert waits for the event-order lock, which A holds until its COMMIT ends:
    # seen from PostgreSQL, in one snapshot with A still at its COMMIT. (Which thread appends
    # first once both have their answers is a race of the clients, not of the commits: under
    # a busy machine B's thread came first once, CI run 57.)
    b_waited = False
    while a.is_alive() and not b_waited:
        (seen,) = asyncio.run(_fetch(url, _B_WAITS_WHILE_A_COMMITS))
        b_waited = bool(seen["b_waits"])
        time.sleep(0.02)
    a.join(30)
    b.join(30)
    assert b_waited, "B's events insert never waited for A's COMMIT"
    assert sorted(committed) == ["a", "b"]

    async def by_id() -> list[str]:
        db = Database(url)
        try:
            async with db.read() as session:
                return list(
                    (await session.execute(select(Event.type).order_by(Event.id))).scalars()
                )
        finally:
            await db.close()

    assert asyncio.run(by_id()) == ["test.a", "test.b"]


async def _upgraded(url: str) -> None:
    db = Database(url)
    try:
        await upgrade(db)
    finally:
        await db.close()


@needs_postgres
def test_a_keys_byte_count_does_not_hold_other_patches_for_a_whole_transaction(tmp_path):
    """Every PATCH of a key adds to one row. The count is written at commit, so a
    transaction that counted and is still busy does not hold the row: another PATCH of the
    same key commits meanwhile, and neither count is lost."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    url = database_url_for(data_dir)

    async def run() -> int:
        db = Database(url)
        try:
            await upgrade(db)
            a_inside = asyncio.Event()
            b_done = asyncio.Event()

            async def a() -> None:
                async with db.write() as session:
                    add_upload_bytes(session, "key1", 10)
                    await session.execute(select(1))  # the rest of A's statements
                    a_inside.set()
                    await asyncio.wait_for(b_done.wait(), 10)  # B must not wait for A

            async def b() -> None:
                await a_inside.wait()
                async with db.write() as session:
                    add_upload_bytes(session, "key1", 5)
                b_done.set()

            await asyncio.gather(a(), b())
            return await upload_bytes_today(db, "key1")
        finally:
            await db.close()

    assert asyncio.run(run()) == 15
