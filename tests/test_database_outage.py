"""A database that cannot serve (down, restarting, out of connections, its lock held past the
busy timeout) gets a request 503 ERR_DATABASE_UNAVAILABLE with Retry-After, not 500: the
client did nothing wrong and should try again (storage/database_outage.py,
server/errors.py). Nothing of such a request is kept, and the server serves again, its
accepted bytes intact, once the database is back."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
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
from tests.conftest import TUS, create_meeting, tus_create, tus_patch
from tests.databases import POSTGRES, database_url_for, on_postgres
from tests.in_process_server import InProcessServer
from tests.key_helpers import eventually
from tests.tcp_link import TcpLink

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
