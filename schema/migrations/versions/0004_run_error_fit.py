"""Runs carry the linear fit of the SAE's error: its ridge strength and R² (issue 16, docs/method.md §8).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("error_ridge", sa.Float))
        batch.add_column(sa.Column("error_linear_r2", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("error_linear_r2")
        batch.drop_column("error_ridge")
