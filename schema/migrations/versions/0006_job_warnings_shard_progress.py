"""Jobs carry warnings a user must see (e.g. a bare .npy token set with no tokenizer, issue 13),
and shards count the tokens done so far, so progress shows inside a shard (issue 15).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("warnings", sa.JSON))
    with op.batch_alter_table("shards") as batch:
        batch.add_column(sa.Column("tokens_done", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("shards") as batch:
        batch.drop_column("tokens_done")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("warnings")
