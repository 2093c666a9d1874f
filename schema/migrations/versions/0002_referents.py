"""Tables of the models, SAEs and token sets jobs refer to.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

REFERENT_TABLES = ("models", "saes", "token_sets")


def upgrade() -> None:
    for name in REFERENT_TABLES:
        op.create_table(
            name,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(255), nullable=False, unique=True),
            sa.Column("source", sa.Text, nullable=False),
            sa.Column("metadata", sa.JSON, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    for name in reversed(REFERENT_TABLES):
        op.drop_table(name)
