"""chunks.carry_state: the decoder's state handed on with a carry (prompt tokens, last speech,
anchors of the carried audio); segments.words: each line's words with times and probability.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("carry_state", sa.JSON(), nullable=True))
    op.add_column("segments", sa.Column("words", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("segments") as batch:
        batch.drop_column("words")
    with op.batch_alter_table("chunks") as batch:
        batch.drop_column("carry_state")
