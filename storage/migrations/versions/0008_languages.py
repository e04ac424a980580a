"""Languages: the meeting's (`auto` or a code), each track's where one was asked for, and
each track's as detected once from its first speech.

Meetings from before have none: they were transcribed in English, and read as `en`.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("meetings") as batch:
        batch.add_column(sa.Column("language", sa.String(16), nullable=True))
        batch.add_column(sa.Column("track_languages", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("detected_languages", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("meetings") as batch:
        batch.drop_column("detected_languages")
        batch.drop_column("track_languages")
        batch.drop_column("language")
