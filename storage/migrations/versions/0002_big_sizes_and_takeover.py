"""Upload sizes as BIGINT (2 GiB and more on PostgreSQL); uploads.takeover_at for the
cross-node PATCH takeover.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _resize(type_: type[sa.Integer]) -> None:
    # SQLite stores any integer in any INTEGER column; changing the declared type there would
    # copy the tables (batch mode) for nothing, with foreign keys in the way.
    if op.get_bind().dialect.name == "sqlite":
        return
    op.alter_column("uploads", "length", type_=type_(), existing_nullable=True)
    op.alter_column("uploads", "offset", type_=type_(), existing_nullable=False)
    op.alter_column("chunks", "bytes", type_=type_(), existing_nullable=True)


def upgrade() -> None:
    _resize(sa.BigInteger)
    op.add_column("uploads", sa.Column("takeover_at", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("uploads", "takeover_at")
    _resize(sa.Integer)
