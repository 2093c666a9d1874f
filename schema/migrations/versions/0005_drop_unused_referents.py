"""Drop the `models` and `saes` tables: nothing ever wrote them (a job names its model and SAEs in its
spec, and `runs` records each SAE). `token_sets` stays: it catalogues cached token sets.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

DROPPED = ("models", "saes")


def upgrade() -> None:
    for table in DROPPED:
        op.drop_table(table)


def downgrade() -> None:
    for table in DROPPED:
        op.create_table(
            table,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(255), unique=True),
            sa.Column("source", sa.Text),
            sa.Column("metadata", sa.JSON),
            sa.Column("created_at", sa.DateTime(timezone=True)),
        )
