"""How many chunks are in each state, without counting the chunks.

Triggers on `chunks` (migration 0007) append a delta row for every insert, state change and
delete, in the transaction that makes it, so the counts are exactly as consistent as the
chunks. A read adds the folded totals to the deltas not folded yet; the recovery sweep folds
them in every few seconds, which keeps the deltas a few thousand rows at most.
"""

from __future__ import annotations

from sqlalchemy import func, literal_column, select, text, union_all

from storage.database import Database
from storage.models import ChunkStateCount, ChunkStateDelta
from storage.write_transaction import Transaction

# Two nodes folding at once would update the total rows in different orders.
FOLD_LOCK = 0x63736374  # "csct"


async def chunks_by_state(session: Transaction) -> dict[str, int]:
    both = union_all(
        select(ChunkStateCount.state, ChunkStateCount.count.label("n")),
        select(ChunkStateDelta.state, ChunkStateDelta.delta.label("n")),
    ).subquery()
    rows = await session.execute(
        select(both.c.state, func.sum(literal_column("n"))).group_by(both.c.state)
    )
    return {state: int(n) for state, n in rows.all() if n}


async def fold_deltas(db: Database) -> None:
    """Add the deltas to the totals and drop them, as one change."""
    # No delta since the last fold (an idle server): no write transaction.
    async with db.read() as session:
        if (await session.execute(select(ChunkStateDelta.id).limit(1))).first() is None:
            return
    async with db.write() as session:
        if db.is_sqlite:
            # Writers are serial: the two statements see the same deltas.
            await session.execute(
                text(
                    "INSERT INTO chunk_state_counts (state, count) "
                    "SELECT state, sum(delta) FROM chunk_state_deltas WHERE true GROUP BY state "
                    "ON CONFLICT (state) DO UPDATE SET count = count + excluded.count"
                )
            )
            await session.execute(text("DELETE FROM chunk_state_deltas"))
            return
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": FOLD_LOCK})
        # One statement, one snapshot: exactly the rows deleted are added (READ COMMITTED
        # would give two statements two snapshots, and a delta committed between them would
        # be deleted without being counted).
        await session.execute(
            text(
                "WITH folded AS (DELETE FROM chunk_state_deltas RETURNING state, delta) "
                "INSERT INTO chunk_state_counts (state, count) "
                "SELECT state, sum(delta) FROM folded GROUP BY state "
                "ON CONFLICT (state) DO UPDATE "
                "SET count = chunk_state_counts.count + excluded.count"
            )
        )
