"""metric_rollups: the histograms of /metrics kept as chunks are transcribed and meetings
complete (a scrape read every transcribed chunk before); an index on chunks.transcribed_at
for the recent real-time factor. Existing rows are counted in once here.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen here, as in any migration: later changes to the buckets need a migration of their own.
INF = 1e308
RTF_BUCKETS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
LAG_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800)
# (name, buckets, the value as SQL, the rows it is measured on): as the code observes them.
MEASURES = (
    (
        "transcription_rtf",
        RTF_BUCKETS,
        "transcribe_s / duration_s",
        "FROM chunks WHERE transcribed_at IS NOT NULL AND transcribe_s IS NOT NULL "
        "AND duration_s > 0",
    ),
    (
        "chunk_lag_s",
        LAG_BUCKETS,
        "transcribed_at - uploaded_at",
        "FROM chunks WHERE transcribed_at IS NOT NULL AND uploaded_at IS NOT NULL",
    ),
    (
        "meeting_end_s",
        LAG_BUCKETS,
        "completed_at - finalized_at",
        "FROM meetings WHERE completed_at IS NOT NULL AND finalized_at IS NOT NULL",
    ),
)


def upgrade() -> None:
    rollups = op.create_table(
        "metric_rollups",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("le", sa.Double(), primary_key=True),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Double(), nullable=False),
    )
    op.create_index("ix_chunks_transcribed_at", "chunks", ["transcribed_at"])
    bind = op.get_bind()
    rows = []
    for name, bounds, value, source in MEASURES:
        for le in (*bounds, INF):
            count, total = bind.execute(
                sa.text(f"SELECT count(*), coalesce(sum({value}), 0) {source} AND {value} <= :le"),
                {"le": float(le)},
            ).one()
            rows.append({"name": name, "le": float(le), "count": count, "sum": float(total)})
    op.bulk_insert(rollups, rows)


def downgrade() -> None:
    op.drop_index("ix_chunks_transcribed_at", "chunks")
    op.drop_table("metric_rollups")
