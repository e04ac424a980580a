"""Schema versions: Alembic migrations, applied by `rollscribe db upgrade`, checked at start.

An empty database is initialised at start (a fresh machine needs no extra command). A
database at an older revision is refused with a message that says what to run: an upgrade
is a decision the operator takes (backups, every node on the new code), not a side effect
of starting one node. A database from before migrations existed (tables, no version) is
revision 0001, the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from storage.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
BASELINE = "0001"
# Two nodes starting on one empty PostgreSQL database must not both create the tables.
_PG_MIGRATION_LOCK = 0x726F6C6C  # "roll"


class SchemaMismatch(RuntimeError):
    """The database's schema is not the one this code was written for."""


@dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: an empty database
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def _config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def _current(connection: Any) -> str | None:
    revision = MigrationContext.configure(connection).get_current_revision()
    if revision is None and inspect(connection).has_table("meetings"):
        return BASELINE
    return revision


def _lock(connection: Any) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})


def _upgrade(connection: Any, target: str) -> tuple[str | None, str]:
    _lock(connection)
    before = _current(connection)
    config = _config(connection)
    if before == BASELINE and MigrationContext.configure(connection).get_current_revision() is None:
        command.stamp(config, BASELINE)
    command.upgrade(config, target)
    after = _current(connection)
    assert after is not None
    return before, after


async def status(db: Database) -> SchemaStatus:
    async with db.write_engine.connect() as connection:
        current = await connection.run_sync(_current)
    return SchemaStatus(current, head_revision())


async def upgrade(db: Database, target: str = "head") -> tuple[str | None, str]:
    """Applies migrations up to `target`; returns (revision before, revision after)."""
    async with db.write_engine.begin() as connection:
        return await connection.run_sync(_upgrade, target)


async def ensure_schema(db: Database) -> SchemaStatus:
    """At start: initialise an empty database; refuse one whose schema is not this code's."""
    found = await status(db)
    if found.current is None:
        await upgrade(db)
        return await status(db)
    if found.up_to_date:
        return found
    if found.current in known_revisions():
        raise SchemaMismatch(
            f"the database schema is at revision {found.current}, older than this "
            f"rollscribe's {found.head}. Back it up, then run `rollscribe db upgrade` "
            "(with the same --database-url / --data-dir) and start again."
        )
    raise SchemaMismatch(
        f"the database schema is at revision {found.current}, which this rollscribe "
        f"(schema {found.head}) does not know: it was upgraded by a newer rollscribe. "
        "Run that version, or upgrade this one."
    )
