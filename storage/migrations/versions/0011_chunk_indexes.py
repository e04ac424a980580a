"""Chunk indexes: a partial index on the carries not yet consumed, and the meeting_id index
dropped.

The tail claim (a carry's flush, storage/job_queue.py) looked for transcribed chunks whose
carry is pending, ordered by transcription time: through the transcription-time index it
walked every transcribed chunk, 0.2-0.6 s per claim with a million of them (SQLite), and an
idle worker claims five times a second. The partial index holds only the pending carries.

`ix_chunks_meeting_id` repeated what `uq_chunk_key` (meeting_id, track, seq) and
`ix_chunks_meeting_uploaded` (meeting_id, uploaded_at) already lead with: every read by
meeting, and the foreign key's checks, use those; it only cost each chunk's INSERT and state
change one more index entry.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_chunks_carry_pending",
        "chunks",
        ["transcribed_at"],
        sqlite_where=sa.text("carry_done = 0 AND carry_samples > 0"),
        postgresql_where=sa.text("NOT carry_done AND carry_samples > 0"),
    )
    op.drop_index("ix_chunks_meeting_id", table_name="chunks")


def downgrade() -> None:
    op.create_index("ix_chunks_meeting_id", "chunks", ["meeting_id"])
    op.drop_index("ix_chunks_carry_pending", table_name="chunks")
