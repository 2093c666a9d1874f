"""SQLAlchemy models of the job database: jobs, runs, shards and the cached token sets jobs
refer to. SQLite by default, PostgreSQL in deployments (same code).
Alembic migrations in schema/migrations create these tables; docs/schema.md documents them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

import pyarrow as pa
from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Integer, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from schema.relations import RUN_SCHEMA

JobStatus = Literal["queued", "planning", "running", "done", "failed", "cancelled"]
JOB_STATUSES: tuple[JobStatus, ...] = get_args(JobStatus)
FINISHED_STATUSES: frozenset[JobStatus] = frozenset({"done", "failed", "cancelled"})
UNFINISHED_STATUSES: tuple[JobStatus, ...] = tuple(s for s in JOB_STATUSES if s not in FINISHED_STATUSES)
ShardStatus = Literal["pending", "running", "done", "failed"]
SHARD_STATUSES: tuple[ShardStatus, ...] = get_args(ShardStatus)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}  # noqa: RUF012


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    spec: Mapped[dict[str, Any]]  # JobSpec.model_dump(mode="json")
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    seed: Mapped[int] = mapped_column(BigInteger)
    versions: Mapped[dict[str, Any]]  # torch, transformer_lens, sae_lens, saegap, git
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Progress counters, updated atomically by finish_shard; rates and ETA derive from them.
    shards_total: Mapped[int] = mapped_column(Integer, default=0)
    shards_done: Mapped[int] = mapped_column(Integer, default=0)
    tokens_done: Mapped[int] = mapped_column(BigInteger, default=0)
    # Liveness: the process planning or running it ("host:pid" when embedded, a Celery node name
    # when queued) and when it last said so; a running job whose process is gone or silent is stale.
    worker: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Things the user must see beside the results (shown by status, the report and the UI).
    warnings: Mapped[list[str] | None] = mapped_column(JSON)


_SQL_TYPES = {
    pa.int16(): Integer,
    pa.int32(): Integer,
    pa.int64(): BigInteger,
    pa.string(): Text,
    pa.float32(): Float,
    pa.float64(): Float,
    pa.bool_(): Boolean,
}


def _run_columns() -> list[Column]:
    """runs has exactly relations.RUN_SCHEMA's columns (the lake mirrors it): one list, kept there."""
    columns = [
        Column("run_id", Integer, primary_key=True, autoincrement=True),
        Column("job_id", Integer, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False, index=True),
    ]
    extra = [f for f in RUN_SCHEMA if f.name not in ("run_id", "job_id")]
    return columns + [Column(f.name, _SQL_TYPES[f.type], nullable=f.nullable) for f in extra]


class Run(Base):
    __table__ = Table("runs", Base.metadata, *_run_columns())


class Shard(Base):
    __tablename__ = "shards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)  # 0-based order within the job
    seq_start: Mapped[int] = mapped_column(Integer)  # first sequence, inclusive
    seq_end: Mapped[int] = mapped_column(Integer)  # last sequence, exclusive
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(255))
    rows_written: Mapped[int | None] = mapped_column(BigInteger)
    tokens: Mapped[int | None] = mapped_column(BigInteger)  # token positions evaluated (one run's count)
    # Token positions done so far while the shard runs: progress inside a shard.
    tokens_done: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TokenSetEntry(Base):
    """A cached token set (worker/token_sources.py), by the name jobs refer to it with."""

    __tablename__ = "token_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(Text)  # registry entry, hub name or local path
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


def record_token_set(config: Any, name: str, source: str, meta: dict[str, Any]) -> bool:
    """Catalogue a cached token set (worker/token_sources.py) in token_sets, once per name.

    `config` is a schema.config.StoreConfig. False when this store has no job database yet (a
    SQLite store not created here): the cached array stands without its row.
    """
    from sqlalchemy import create_engine, select
    from sqlalchemy.exc import IntegrityError
    from sqlalchemy.orm import Session

    if config.database_url is None and not (config.data_dir / "jobs.sqlite").exists():
        return False
    engine = create_engine(config.job_database_url())
    try:
        with Session(engine) as session, session.begin():
            if session.scalar(select(TokenSetEntry.id).where(TokenSetEntry.name == name)) is None:
                session.add(TokenSetEntry(name=name, source=source, meta=meta))
    except IntegrityError:  # another worker recorded it between the check and the insert
        pass
    finally:
        engine.dispose()
    return True
