"""uploads.kept_with_meeting, and a partial index on the uploads that may expire.

The expiry sweep looked at every upload not terminated, and for each probed its chunk's
state: every upload of every accepted chunk, kept with its meeting, on every sweep (478 ms
every 2 s with a million chunks: a quarter of a core for a server doing nothing). Uploads
whose chunk passed validation are now marked when their last bytes are recorded, and the
sweep reads only the others through the index. Existing uploads are marked here when their
chunk is past validation.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite takes NOT NULL with a default): batch mode would copy the
    # table, and dropping the old one fails on the chunks' foreign keys.
    op.add_column(
        "uploads",
        sa.Column("kept_with_meeting", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.execute(
        "UPDATE uploads SET kept_with_meeting = true WHERE EXISTS (SELECT 1 FROM chunks "
        "WHERE chunks.upload_id = uploads.id AND chunks.state IN "
        "('waiting', 'queued', 'transcribing', 'transcribed', 'failed'))"
    )
    op.create_index(
        "ix_uploads_expiring",
        "uploads",
        ["expires_at"],
        sqlite_where=sa.text("terminated_at IS NULL AND kept_with_meeting = 0"),
        postgresql_where=sa.text("terminated_at IS NULL AND NOT kept_with_meeting"),
    )


def downgrade() -> None:
    op.drop_index("ix_uploads_expiring", table_name="uploads")
    op.drop_column("uploads", "kept_with_meeting")
