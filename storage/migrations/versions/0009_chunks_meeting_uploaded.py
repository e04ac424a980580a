"""An index on chunks (meeting_id, uploaded_at): each live meeting's newest upload is one
probe of it, where the backlog read every chunk of every live meeting (1.15 s per /metrics
scrape and per meeting creation with a million chunks in 189 live meetings).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_chunks_meeting_uploaded", "chunks", ["meeting_id", "uploaded_at"])


def downgrade() -> None:
    op.drop_index("ix_chunks_meeting_uploaded", table_name="chunks")
