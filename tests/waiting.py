"""Waiting for jobs on progress, not on a fixed deadline: a loaded machine is slow but not stuck."""

from __future__ import annotations

import time

from schema.jobs import JobInfo
from schema.store import Store

FINISHED = ("done", "failed", "cancelled")
STALL_S = 180  # no change at all in this long is a stuck job, not a slow machine


def job_state(store: Store, job_id: int) -> tuple:
    """Everything that moves while a job makes progress (shard attempts and workers included)."""
    job = store.get_job(job_id)
    shards = tuple((s.status, s.attempts, s.worker) for s in store.list_shards(job_id))
    return job.status, job.shards_done, job.tokens_done, shards


def wait_finished(store: Store, job_id: int) -> JobInfo:
    """Wait while the job makes progress; fail if its state stands still for STALL_S seconds."""
    wait_all_finished(store, [job_id])
    return store.get_job(job_id)


def wait_all_finished(store: Store, job_ids: list[int]) -> None:
    """Wait while any of the jobs makes progress; fail if all their states stand still for STALL_S seconds."""
    last, changed = None, time.monotonic()
    while True:
        states = [job_state(store, j) for j in job_ids]
        if all(state[0] in FINISHED for state in states):
            return
        if states != last:
            last, changed = states, time.monotonic()
        assert time.monotonic() - changed < STALL_S, f"jobs {job_ids} made no progress for {STALL_S}s: {states}"
        time.sleep(0.2)
