"""Progress inside a shard: the engine reports tokens per block of sequences, the worker writes them
to the shard's row (throttled), a retry starts afresh, and status, ETA and rate count them."""

from __future__ import annotations

import pytest

from schema.jobs import Progress
from schema.spec import JobSpec
from schema.store import Store
from tests.worker.test_api import tiny_spec
from worker import api, steps
from worker.commands.status import shard_line
from worker.prepare import evaluate_shard

CONTEXT = 24  # tests.worker.conftest's token length: one sequence's recorded positions (all-token scope)
BLOCK = 4 * CONTEXT  # one block of sequences: 128 tokens per pass over 24-token sequences, evened (worker/budget.py)


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)


def small_blocks(assets: dict[str, str]) -> JobSpec:
    """16 sequences in shards of 12 and 4; one variant and 128 tokens per pass: blocks of 4 sequences, so the
    first shard reports three times and the second once."""
    return tiny_spec(assets, n_sequences=16, sequences_per_shard=12, max_tokens_per_pass=128, interventions=["sae"])


def test_tokens_done_rise_within_each_shard_and_end_at_its_tokens(
    tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steps, "PROGRESS_EVERY_S", 0.0)  # every report is written
    job_id = api.create(small_blocks(tiny_assets), store=tmp_store)
    seen: list[tuple[int, int, Progress, str]] = []  # (shard index, its row's tokens_done, job progress, status line)
    write = tmp_store.shard_tokens

    def recorded(shard_id: int, done: int, planned: int) -> None:
        write(shard_id, done, planned)
        shard, progress = tmp_store.get_shard(shard_id), tmp_store.progress(job_id)
        seen.append((shard.index, shard.tokens_done, progress, shard_line(progress)))

    monkeypatch.setattr(tmp_store, "shard_tokens", recorded)
    job = api.run_embedded(job_id, store=tmp_store)
    assert job.status == "done", job.error

    first = [row for row in seen if row[0] == 0]
    second = [row for row in seen if row[0] == 1]
    assert [done for _, done, _, _ in first] == [BLOCK, 2 * BLOCK, 3 * BLOCK]
    assert [p.running_fraction for _, _, p, _ in first] == pytest.approx([1 / 3, 2 / 3, 1.0])
    # the first shard's tokens count as done, the second's as in flight
    assert [(done, p.tokens_in_flight, p.tokens_done, p.shards_done) for _, done, p, _ in second] == [
        (BLOCK, BLOCK, 3 * BLOCK, 1)
    ]
    assert first[1][3] == "shards 0/2; shard 1/2 running, 67% of it; tokens 192 (192 of them in running shards)"
    assert first[0][2].eta_seconds is not None  # an ETA before any shard is done
    shards = tmp_store.list_shards(job_id)
    assert [(s.tokens_done, s.tokens) for s in shards] == [(3 * BLOCK, 3 * BLOCK), (BLOCK, BLOCK)]
    finished = tmp_store.progress(job_id)
    assert (finished.tokens_done, finished.tokens_in_flight, finished.shards_running) == (4 * BLOCK, 0, 0)


def test_a_retried_shard_starts_its_progress_afresh(
    tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(steps, "PROGRESS_EVERY_S", 0.0)
    job_id = api.create(small_blocks(tiny_assets), store=tmp_store)
    shard = steps.plan_job(job_id, tmp_store, "worker-1")[0]

    def dies_after_a_block(job: object, seq_start: int, seq_end: int, on_tokens: steps.ShardTokens) -> None:
        on_tokens(BLOCK, 3 * BLOCK)
        raise ConnectionError("lost the database")

    monkeypatch.setattr(steps, "evaluate_shard", dies_after_a_block)
    with pytest.raises(ConnectionError):
        steps.run_shard(job_id, shard.id, tmp_store, "worker-1")
    assert tmp_store.get_shard(shard.id).tokens_done == BLOCK
    assert tmp_store.progress(job_id).running_fraction == pytest.approx(1 / 3)

    at_start: list[int] = []
    start = tmp_store.start_shard

    def start_and_look(shard_id: int, worker: str) -> int:
        attempt = start(shard_id, worker)
        at_start.append(tmp_store.get_shard(shard_id).tokens_done)
        return attempt

    monkeypatch.setattr(tmp_store, "start_shard", start_and_look)
    monkeypatch.setattr(steps, "evaluate_shard", evaluate_shard)
    assert steps.run_shard(job_id, shard.id, tmp_store, "worker-2")  # the queue's retry
    assert at_start == [0]
    done = tmp_store.get_shard(shard.id)
    assert (done.status, done.attempts, done.tokens_done, done.tokens) == ("done", 2, 3 * BLOCK, 3 * BLOCK)


def test_resume_resets_the_progress_of_unfinished_shards(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    job_id = api.create(small_blocks(tiny_assets), store=tmp_store)
    shard = steps.plan_job(job_id, tmp_store, "worker-1")[0]
    tmp_store.start_shard(shard.id, "worker-1")
    tmp_store.shard_tokens(shard.id, 2 * BLOCK, 3 * BLOCK)
    tmp_store.cancel_job(job_id)
    assert tmp_store.get_shard(shard.id).tokens_done == 2 * BLOCK
    tmp_store.reopen_job(job_id)
    assert tmp_store.get_shard(shard.id).tokens_done == 0
    tmp_store.shard_tokens(shard.id, BLOCK, 3 * BLOCK)  # a late report: the shard is pending, not running
    assert tmp_store.get_shard(shard.id).tokens_done == 0


def test_eta_counts_the_running_shard_by_its_fraction(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    job_id = api.create(small_blocks(tiny_assets), store=tmp_store)
    shards = steps.plan_job(job_id, tmp_store, "worker-1")
    tmp_store.start_shard(shards[0].id, "worker-1")
    before = tmp_store.progress(job_id)
    assert (before.shards_running, before.running_fraction, before.eta_seconds) == (1, None, None)
    tmp_store.shard_tokens(shards[0].id, BLOCK, 3 * BLOCK)
    third = tmp_store.progress(job_id)
    # a third of one of 2 shards done in `elapsed`: the 5/3 shards to go take 5x as long
    assert third.eta_seconds == pytest.approx(5 * third.elapsed_seconds)
    assert third.tokens_per_second == pytest.approx(BLOCK / third.elapsed_seconds)


class _Recorder:
    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []

    def shard_tokens(self, shard_id: int, done: int, planned: int) -> None:
        self.writes.append((done, planned))


def test_progress_writes_are_throttled() -> None:
    """At most one write per PROGRESS_EVERY_S (1 s) between the first report and the last."""
    clock = iter([0.0, 0.3, 0.6, 1.2, 1.5, 1.6])
    store = _Recorder()
    report = steps.ShardTokens(store, shard_id=7, clock=lambda: next(clock))  # type: ignore[arg-type]
    for done in range(1, 7):
        report(done, 6)
    assert store.writes == [(1, 6), (4, 6), (6, 6)]
