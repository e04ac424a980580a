"""The writes every transaction makes at its commit, after its other statements: the event
rows it logged, and the upload bytes it counted for a key's daily quota.

Both are rows that many transactions write in turn:
- Event ids must follow commit order. Readers of the event log (SSE replay, the webhook
  fan-out cursor) take "id > last seen"; PostgreSQL hands ids out at insert time but
  transactions commit in any order, so a reader that saw event 11 would never see an event
  10 committed a moment later. On PostgreSQL the insert therefore takes one transaction
  lock first, held to the COMMIT. (SQLite's writers are serial already.)
- A key's byte count for the day is one row, and every PATCH adds to it. On PostgreSQL its
  row lock is held from the UPDATE to the COMMIT: counted early in a transaction, it made
  every PATCH of a key wait for the whole of the one before (measured under 200 uploading
  clients, the wait was nearly all of a request's time: `bench/README.md`, "Many small
  uploads").
So both are written last, in one statement with the lock and the NOTIFY that wakes other
processes' event feeds, and on asyncpg that statement and the COMMIT go to the server as one
query (`postgres_commit`, `storage/postgres_transaction.py`): what writers do in turn is
PostgreSQL's own work, never a wait for this process. Sent as two round trips, the lock was
held from the statement's end until the COMMIT arrived: under 200 uploading clients the
holder sat idle in transaction, waiting for a busy server's next turn, about half the time
the lock was held, and four backends on average queued behind it (`bench/README.md`, "Many
small uploads"). Nothing else runs while the lock is held, so it cannot take part in a
deadlock; the byte count waits for the lock before it takes its row, so every transaction
takes the two in the same order.

They are plain rows until then, not ORM objects: the unit of work's bookkeeping for them was
a good part of every write turn's CPU, while SQLite's one write lock was held.
"""

from __future__ import annotations

import functools
import json
import re
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.models import Event, KeyUploadBytes
from storage.prepared_statements import PreparedStatement, write

if TYPE_CHECKING:
    from storage.write_transaction import WriteTransaction

EVENTS: Table = Event.__table__  # type: ignore[assignment]
UPLOAD_BYTES: Table = KeyUploadBytes.__table__  # type: ignore[assignment]

# WriteTransaction.info keys: what the transaction logged and counted, not yet written.
_PENDING_EVENTS = "pending_events"
_PENDING_BYTES = "pending_upload_bytes"

EVENT_ORDER_LOCK = 0x65766E74  # "evnt"
# Notified by every PostgreSQL transaction that logs events, at its commit (event feeds of
# every process LISTEN to it: storage/event_feed.py).
EVENTS_CHANNEL = "rollscribe_events"


def utc_day(now: float) -> str:
    return _utc_day_of(int(now // 86_400))


@functools.lru_cache(maxsize=4)
def _utc_day_of(day_number: int) -> str:
    # Asked two or three times per upload; formatting a datetime each time was about 1 % of
    # the upload path's CPU. POSIX time has no leap seconds: every day is 86,400 of them.
    return datetime.fromtimestamp(day_number * 86_400, UTC).strftime("%Y-%m-%d")


def log_event(
    session: WriteTransaction, meeting_id: str, type_: str, payload: dict[str, Any]
) -> None:
    session.info.setdefault(_PENDING_EVENTS, []).append(
        {"meeting_id": meeting_id, "type": type_, "payload": payload, "created_at": time.time()}
    )
    session.info["logged_events"] = True  # the database wakes event feeds after the commit


def count_upload_bytes(session: WriteTransaction, owner: str, count: int, now: float) -> None:
    counts: dict[tuple[str, str], int] = session.info.setdefault(_PENDING_BYTES, {})
    key = (owner, utc_day(now))
    counts[key] = counts.get(key, 0) + count


# PostgreSQL: the lock is taken in a materialized CTE that both writes' rows are joined to,
# so no event id is drawn from the sequence and no count's row is locked before the lock is
# held. Events keep the order they were logged in (their ordinality).
_LOCK = """turn AS MATERIALIZED (
    SELECT pg_advisory_xact_lock(:lock), pg_notify(:channel, '')
)"""
_COUNT = """INSERT INTO key_upload_bytes (owner, day, bytes)
    SELECT c.owner, c.day, c.bytes FROM {turn}
        json_to_recordset(CAST(:counts AS json)) AS c(owner text, day text, bytes bigint)
    ON CONFLICT (owner, day) DO UPDATE SET bytes = key_upload_bytes.bytes + EXCLUDED.bytes"""
_INSERT_EVENTS = """INSERT INTO events (meeting_id, type, payload, created_at)
    SELECT r.meeting_id, r.type, r.payload, r.created_at
    FROM turn CROSS JOIN ROWS FROM (
        json_to_recordset(CAST(:events AS json))
            AS (meeting_id text, type text, payload json, created_at double precision)
    ) WITH ORDINALITY AS r(meeting_id, type, payload, created_at, n)
    ORDER BY r.n"""
_PG_EVENTS_SQL = f"WITH {_LOCK} {_INSERT_EVENTS}"
_PG_EVENTS_AND_COUNTS_SQL = (
    f"WITH {_LOCK}, counted AS ({_COUNT.format(turn='turn CROSS JOIN')}) {_INSERT_EVENTS}"
)
_PG_COUNTS_SQL = _COUNT.format(turn="")
# Another PostgreSQL driver than asyncpg: the same statements with parameters, before a
# COMMIT of their own (`write_pending`).
_PG_EVENTS = PreparedStatement(text(_PG_EVENTS_SQL))
_PG_EVENTS_AND_COUNTS = PreparedStatement(text(_PG_EVENTS_AND_COUNTS_SQL))
_PG_COUNTS = PreparedStatement(text(_PG_COUNTS_SQL))
_INSERT_EVENT = PreparedStatement(insert(EVENTS))
_SQLITE_UPSERT = sqlite_insert(UPLOAD_BYTES)
_SQLITE_COUNT = PreparedStatement(
    _SQLITE_UPSERT.on_conflict_do_update(
        index_elements=["owner", "day"],
        set_={"bytes": UPLOAD_BYTES.c.bytes + _SQLITE_UPSERT.excluded.bytes},
    )
)


def _take_pending(info: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the transaction logged and counted, taken out of its `info`: the event rows, and
    a row per (key, day) counted."""
    events: list[dict[str, Any]] = info.pop(_PENDING_EVENTS, None) or []
    counts: dict[tuple[str, str], int] = info.pop(_PENDING_BYTES, None) or {}
    count_rows = [
        {"owner": owner, "day": day, "bytes": count} for (owner, day), count in counts.items()
    ]
    return events, count_rows


async def write_pending(connection: AsyncConnection, info: dict[str, Any]) -> None:
    """At the end of a write transaction (`storage/write_transaction.py`), after its other
    statements: what it logged and counted."""
    events, count_rows = _take_pending(info)
    if not events and not count_rows:
        return
    if connection.dialect.name == "postgresql":
        await _write_on_postgres(connection, events, count_rows)
        return
    if events:
        await write(connection, _INSERT_EVENT, events)
    if count_rows:
        await write(connection, _SQLITE_COUNT, count_rows)


async def _write_on_postgres(
    connection: AsyncConnection, events: list[dict[str, Any]], count_rows: list[dict[str, Any]]
) -> None:
    if not events:
        # No event: no lock. The count's row lock is the last thing this transaction takes.
        await write(connection, _PG_COUNTS, {"counts": json.dumps(count_rows)})
        return
    params = {"lock": EVENT_ORDER_LOCK, "channel": EVENTS_CHANNEL, "events": json.dumps(events)}
    if count_rows:
        await write(connection, _PG_EVENTS_AND_COUNTS, {**params, "counts": json.dumps(count_rows)})
    else:
        await write(connection, _PG_EVENTS, params)


def postgres_commit(info: dict[str, Any]) -> str:
    """The query that ends a PostgreSQL transaction: what it logged and counted written (as
    `write_pending` writes them), then COMMIT, as one simple query (one round trip).

    Its values are written into the text as literals: PostgreSQL's extended protocol, the
    one that carries parameters, takes one statement per message, and asyncpg sends no
    other statement before that message's answer is in; the simple protocol takes several
    statements in one message but no parameters. The values are the lock's number, the
    channel's name (both constants here) and two JSON documents from `json.dumps`, which
    escapes everything outside ASCII and every control character: `_literal` quotes them."""
    events, count_rows = _take_pending(info)
    values = {"lock": str(EVENT_ORDER_LOCK), "channel": _literal(EVENTS_CHANNEL)}
    if count_rows:
        values["counts"] = _literal(json.dumps(count_rows))
    if events:
        values["events"] = _literal(json.dumps(events))
        sql = _PG_EVENTS_AND_COUNTS_SQL if count_rows else _PG_EVENTS_SQL
    elif count_rows:
        sql = _PG_COUNTS_SQL
    else:
        return "COMMIT"
    return _PARAMETER.sub(lambda m: values[m.group(1)], sql) + ";\nCOMMIT"


_PARAMETER = re.compile(r":(lock|channel|events|counts)\b")


def _literal(value: str) -> str:
    """A PostgreSQL string literal of `value` (ASCII without NUL, as `json.dumps` writes).
    The E'' form means the same whatever `standard_conforming_strings` says."""
    if not value.isascii() or "\0" in value:
        raise ValueError("only ASCII text without NUL is written as a literal here")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def drop_pending(info: dict[str, Any]) -> None:
    """A transaction rolled back: nothing it logged or counted is written."""
    info.pop(_PENDING_EVENTS, None)
    info.pop(_PENDING_BYTES, None)
