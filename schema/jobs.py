"""Job metadata API over the job database (SQLAlchemy): jobs, runs, shards, progress.

Plain methods the queue (worker/) and the UI call. Every method opens its own short
transaction, so many worker processes can share one database (SQLite in WAL mode with
a busy timeout, or PostgreSQL). Counters are updated with SQL increments, never
read-modify-write in Python.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from schema.errors import JobStateError, UnknownJobError, UnknownShardError
from schema.spec import JobSpec
from schema.tables import FINISHED_STATUSES, Job, JobStatus, Run, Shard, utc_now


class Versions(BaseModel):
    """Library versions the worker ran with, stored with the job: one field per library the results depend
    on, named as the distribution is with '-' for '_' (worker.api.versions reads exactly these), plus git."""

    model_config = ConfigDict(extra="allow", frozen=True)

    torch: str
    transformer_lens: str
    sae_lens: str
    saegap: str
    git: str | None = None  # commit hash of the saegap checkout, None outside git


class RunInfo(BaseModel):
    """One run (an SAE at its hook) of a job; fields are relations.RUN_SCHEMA's minus the ids."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    sae: str
    architecture: str
    hook_name: str
    hook_point: str
    layer: int
    scope: str
    target_position: int | None = None
    window: int | None = None
    d_in: int
    d_sae: int
    error_ridge: float | None = None  # ridge strength of the error's linear fit (docs/method.md §8)
    error_linear_r2: float | None = None  # fraction of the error's variance that fit explains


class JobInfo(BaseModel):
    """A job row, detached from the database."""

    id: int
    spec: JobSpec
    status: JobStatus
    error: str | None
    seed: int
    versions: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    shards_total: int
    shards_done: int
    tokens_done: int
    worker: str | None = None
    heartbeat_at: datetime | None = None
    # What the user must see beside the results, e.g. a bare .npy's unknown tokenizer (worker/token_sources.py).
    warnings: list[str] = Field(default_factory=list)

    @field_validator("warnings", mode="before")
    @classmethod
    def _none_is_no_warning(cls, value: object) -> object:
        return [] if value is None else value


class ShardInfo(BaseModel):
    id: int
    job_id: int
    index: int
    seq_start: int
    seq_end: int
    status: str
    attempts: int
    worker: str | None
    rows_written: int | None
    tokens: int | None  # token positions (one run's count): planned while it runs, counted once done
    tokens_done: int = 0  # of those, done so far (progress inside a running shard; = tokens once done)
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None


class Progress(BaseModel):
    """Where a job stands; rates and ETA derive from the counters, the running shards' progress and started_at."""

    job_id: int
    status: JobStatus
    shards_done: int
    shards_total: int
    tokens_done: int = Field(description="token positions of the finished shards")
    shards_running: int = 0
    tokens_in_flight: int = Field(default=0, description="token positions done so far in running shards")
    running_fraction: float | None = Field(
        default=None,
        description="how far the running shards are, 0-1 (mean of their tokens done / planned); None before one says",
    )
    elapsed_seconds: float | None = Field(description="since the first shard started; None before")
    tokens_per_second: float | None
    eta_seconds: float | None = Field(
        description="remaining shards at the mean pace so far (running shards counted by their fraction done); "
        "None before any progress"
    )


def as_utc(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; every stored time is UTC."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class JobTables:
    """Job, run and shard bookkeeping on one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_job(self, spec: JobSpec | dict[str, Any], versions: Versions | dict[str, Any]) -> int:
        """Validate and store a job (status 'queued'); returns its id.

        Raises pydantic.ValidationError naming the bad field of `spec` or `versions`.
        """
        spec = JobSpec.model_validate(spec)
        versions = Versions.model_validate(versions)
        with Session(self.engine) as session, session.begin():
            job = Job(
                spec=spec.model_dump(mode="json"), status="queued", seed=spec.seed, versions=versions.model_dump()
            )
            job.shards_total = job.shards_done = job.tokens_done = 0
            session.add(job)
            session.flush()
            return job.id

    def get_job(self, job_id: int) -> JobInfo:
        with Session(self.engine) as session:
            return _job_info(_job_row(session, job_id))

    def list_jobs(self, status: JobStatus | None = None, limit: int = 100) -> list[JobInfo]:
        """Newest first, optionally only those with `status`."""
        query = select(Job).order_by(Job.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Job.status == status)
        with Session(self.engine) as session:
            return [_job_info(job) for job in session.scalars(query)]

    def set_job_status(self, job_id: int, status: JobStatus, error: str | None = None) -> None:
        """Set status (and error). 'running' stamps started_at once; finished statuses stamp finished_at."""
        with Session(self.engine) as session, session.begin():
            job = _job_row(session, job_id)
            job.status, job.error = status, error
            now = utc_now()
            if status == "running" and job.started_at is None:
                job.started_at = now
            if status in FINISHED_STATUSES:
                job.finished_at = now

    def set_job_warnings(self, job_id: int, warnings: list[str]) -> None:
        """Store the warnings a user must see beside the job's results (replacing any stored before)."""
        with Session(self.engine) as session, session.begin():
            _job_row(session, job_id).warnings = list(warnings) or None

    def touch_job(self, job_id: int, worker: str) -> None:
        """Record that `worker` is alive and working on the job (its heartbeat)."""
        with Session(self.engine) as session, session.begin():
            session.execute(update(Job).where(Job.id == job_id).values(worker=worker, heartbeat_at=utc_now()))

    def reopen_job(self, job_id: int) -> int:
        """Queue an unfinished job again: status 'queued', no error, its unfinished shards 'pending'.

        Done shards and their records stay; returns how many shards will run again.
        Raises JobStateError for a done job.
        """
        with Session(self.engine) as session, session.begin():
            job = _job_row(session, job_id)
            if job.status == "done":
                raise JobStateError(f"job {job_id} is done: nothing to resume")
            job.status, job.error, job.finished_at = "queued", None, None
            shards = session.scalars(select(Shard).where(Shard.job_id == job_id, Shard.status != "done")).all()
            for shard in shards:
                shard.status, shard.error, shard.finished_at, shard.tokens_done = "pending", None, None, 0
            return len(shards)

    def delete_job(self, job_id: int) -> None:
        """Remove a job that never ran (no runs, no shards), e.g. one the broker would not take."""
        with Session(self.engine) as session, session.begin():
            job = _job_row(session, job_id)
            if job.shards_total or session.scalars(select(Run.run_id).where(Run.job_id == job_id)).first():
                raise JobStateError(f"job {job_id} has runs or shards; it is not deleted")
            session.delete(job)

    def cancel_job(self, job_id: int) -> None:
        """Mark a job cancelled; its finished shards and their records stay. Done/failed jobs are left as they are."""
        with Session(self.engine) as session, session.begin():
            job = _job_row(session, job_id)
            if job.status not in FINISHED_STATUSES:
                job.status, job.finished_at = "cancelled", utc_now()

    def add_runs(self, job_id: int, runs: list[RunInfo | dict[str, Any]]) -> list[int]:
        """Store the job's runs; returns run ids in the order given."""
        with Session(self.engine) as session, session.begin():
            return self._insert_runs(session, job_id, runs)

    def _insert_runs(self, session: Session, job_id: int, runs: list[RunInfo | dict[str, Any]]) -> list[int]:
        _job_row(session, job_id)
        rows = [Run(job_id=job_id, **RunInfo.model_validate(run).model_dump()) for run in runs]
        session.add_all(rows)
        session.flush()
        return [row.run_id for row in rows]

    def job_run_ids(self, job_id: int) -> set[int]:
        with Session(self.engine) as session:
            _job_row(session, job_id)
            return set(session.scalars(select(Run.run_id).where(Run.job_id == job_id)))

    def add_shards(self, job_id: int, ranges: list[tuple[int, int]]) -> list[int]:
        """Store shards covering [seq_start, seq_end) each, indexed after existing ones; returns ids."""
        if any(end <= start or start < 0 for start, end in ranges):
            raise ValueError(f"shard ranges must be [start, end) with 0 <= start < end, got {ranges}")
        with Session(self.engine) as session, session.begin():
            job = _job_row(session, job_id)
            first = job.shards_total
            rows = [
                Shard(job_id=job_id, index=first + i, seq_start=s, seq_end=e, status="pending", attempts=0)
                for i, (s, e) in enumerate(ranges)
            ]
            session.add_all(rows)
            session.execute(update(Job).where(Job.id == job_id).values(shards_total=Job.shards_total + len(rows)))
            session.flush()
            return [row.id for row in rows]

    def list_shards(self, job_id: int) -> list[ShardInfo]:
        with Session(self.engine) as session:
            _job_row(session, job_id)
            rows = session.scalars(select(Shard).where(Shard.job_id == job_id).order_by(Shard.index))
            return [ShardInfo.model_validate(row, from_attributes=True) for row in rows]

    def get_shard(self, shard_id: int) -> ShardInfo:
        with Session(self.engine) as session:
            return ShardInfo.model_validate(_shard_row(session, shard_id), from_attributes=True)

    def start_shard(self, shard_id: int, worker: str) -> int:
        """Mark a shard running on `worker` (attempts += 1); returns the attempt number.

        The first started shard moves a queued/planning job to 'running'. Raises
        JobStateError when the job is cancelled, failed or done.
        """
        with Session(self.engine) as session, session.begin():
            shard = _shard_row(session, shard_id)
            job = _job_row(session, shard.job_id)
            if job.status in FINISHED_STATUSES:
                raise JobStateError(f"job {job.id} is {job.status}; shard {shard_id} is not started")
            now = utc_now()
            shard.status, shard.worker, shard.started_at, shard.error = "running", worker, now, None
            shard.attempts, shard.tokens_done = shard.attempts + 1, 0  # a retry starts its progress afresh
            if job.status in ("queued", "planning"):
                job.status = "running"
            job.started_at = job.started_at or now
            job.worker, job.heartbeat_at = worker, now
            return shard.attempts

    def finish_shard(self, shard_id: int, *, rows_written: int, tokens: int) -> None:
        """Mark a shard done and add it to the job's progress (once, even if called again).

        `rows_written`: record rows the shard wrote (write_shard's total); `tokens`: token
        positions it evaluated (one run's count). The last shard marks a running job done.
        """
        with Session(self.engine) as session, session.begin():
            shard = _shard_row(session, shard_id)
            was_done = shard.status == "done"
            shard.status, shard.rows_written, shard.tokens, shard.finished_at = "done", rows_written, tokens, utc_now()
            shard.tokens_done = tokens
            if was_done:
                return
            session.execute(
                update(Job)
                .where(Job.id == shard.job_id)
                .values(shards_done=Job.shards_done + 1, tokens_done=Job.tokens_done + tokens, heartbeat_at=utc_now())
            )
            session.flush()
            job = session.get(Job, shard.job_id)
            session.refresh(job)
            if job.status == "running" and job.shards_done >= job.shards_total:
                job.status, job.finished_at = "done", utc_now()

    def shard_tokens(self, shard_id: int, done: int, planned: int) -> None:
        """Record how many of a running shard's `planned` token positions are done (its progress inside)."""
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(Shard)
                .where(Shard.id == shard_id, Shard.status == "running")
                .values(tokens_done=done, tokens=planned)
            )

    def fail_shard(self, shard_id: int, error: str) -> None:
        """Mark a shard failed with its error; the job's status is the queue's decision."""
        with Session(self.engine) as session, session.begin():
            shard = _shard_row(session, shard_id)
            shard.status, shard.error, shard.finished_at = "failed", error, utc_now()

    def progress(self, job_id: int) -> Progress:
        job = self.get_job(job_id)
        running = self._running_shards(job_id) if job.status == "running" else []
        in_flight = sum(done for done, _ in running)
        fractions = [min(done / planned, 1.0) for done, planned in running if planned]  # shards that said
        started = as_utc(job.started_at)
        end = as_utc(job.finished_at) if job.status in FINISHED_STATUSES and job.finished_at else datetime.now(UTC)
        elapsed = (end - started).total_seconds() if started else None
        tokens = job.tokens_done + in_flight
        units = job.shards_done + sum(fractions)  # shards' worth of work done, running ones by their fraction
        eta = (
            elapsed / units * max(job.shards_total - units, 0.0)
            if elapsed and units and job.status == "running"
            else None
        )
        return Progress(
            job_id=job.id, status=job.status, shards_done=job.shards_done, shards_total=job.shards_total,
            tokens_done=job.tokens_done, shards_running=len(running), tokens_in_flight=in_flight,
            running_fraction=sum(fractions) / len(fractions) if fractions else None, elapsed_seconds=elapsed,
            tokens_per_second=tokens / elapsed if elapsed and tokens else None, eta_seconds=eta,
        )  # fmt: skip

    def _running_shards(self, job_id: int) -> list[tuple[int, int | None]]:
        """(token positions done, planned) of each running shard of the job; planned is None before it says."""
        query = select(Shard.tokens_done, Shard.tokens).where(Shard.job_id == job_id, Shard.status == "running")
        with Session(self.engine) as session:
            return [(int(done or 0), planned) for done, planned in session.execute(query)]


def _job_row(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None:
        raise UnknownJobError(job_id)
    return job


def _shard_row(session: Session, shard_id: int) -> Shard:
    shard = session.get(Shard, shard_id)
    if shard is None:
        raise UnknownShardError(f"unknown shard id {shard_id}")
    return shard


def _job_info(job: Job) -> JobInfo:
    return JobInfo.model_validate(job, from_attributes=True)
