"""Job tables: jobs, runs, shards.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("versions", sa.JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("started_at", _TIME),
        sa.Column("finished_at", _TIME),
        sa.Column("shards_total", sa.Integer, nullable=False),
        sa.Column("shards_done", sa.Integer, nullable=False),
        sa.Column("tokens_done", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("sae", sa.Text, nullable=False),
        sa.Column("architecture", sa.Text, nullable=False),
        sa.Column("hook_name", sa.Text, nullable=False),
        sa.Column("hook_point", sa.Text, nullable=False),
        sa.Column("layer", sa.Integer, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("target_position", sa.Integer),
        sa.Column("window", sa.Integer),
        sa.Column("d_in", sa.Integer, nullable=False),
        sa.Column("d_sae", sa.Integer, nullable=False),
    )
    op.create_index("ix_runs_job_id", "runs", ["job_id"])
    op.create_table(
        "shards",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("seq_start", sa.Integer, nullable=False),
        sa.Column("seq_end", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("worker", sa.String(255)),
        sa.Column("rows_written", sa.BigInteger),
        sa.Column("tokens", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("started_at", _TIME),
        sa.Column("finished_at", _TIME),
    )
    op.create_index("ix_shards_job_id", "shards", ["job_id"])


def downgrade() -> None:
    op.drop_table("shards")
    op.drop_table("runs")
    op.drop_table("jobs")
