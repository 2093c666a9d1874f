"""Concurrent writers, a reader during the writes, and writers killed mid-shard, on real engines."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from schema import lake, read
from schema.config import StoreConfig
from schema.relations import RECORD_TABLES
from schema.spec import JobSpec
from schema.store import Store
from tests.schema.records import VERSIONS, run_meta, synthetic_shard

WRITERS = 4
SHARDS_PER_WRITER = 30  # 120 shard writes (12 of them retries) interleaved with a reader, per backend
SEQUENCES_PER_SHARD = 2
POSITIONS = 8
INTERVENTIONS = ("sae", "eps_random", "zero_ablation")
RETRIED_PER_WRITER = 3  # each writer rewrites its first shards once more (salt 1): replaced, not added
TOKEN_ROWS = SEQUENCES_PER_SHARD * POSITIONS  # per run and shard
INTERVENTION_ROWS = TOKEN_ROWS * len(INTERVENTIONS)
SPAWN = mp.get_context("spawn")
HANG_GUARD_S = 1800  # joins wait on the processes' progress; this only stops a hung test, far past any slow run


def _records(run_ids: list[int], seq_range: tuple[int, int], salt: float, positions: int = POSITIONS) -> dict:
    return {run_id: synthetic_shard(*seq_range, positions, INTERVENTIONS, salt) for run_id in run_ids}


Shards = list[tuple[int, tuple[int, int]]]  # (shard id, (seq_start, seq_end))


def _write_shards(config: StoreConfig, job_id: int, run_ids: list[int], shards: Shards) -> None:
    """Child process: start, write and finish each shard; rewrite the first few (a retried shard)."""
    store = Store.open(config)
    for number, (shard_id, seq_range) in enumerate(shards):
        store.start_shard(shard_id, f"writer-{os.getpid()}")
        written = store.write_shard(job_id, shard_id, _records(run_ids, seq_range, salt=0.0))
        if number < RETRIED_PER_WRITER:
            written = store.write_shard(job_id, shard_id, _records(run_ids, seq_range, salt=1.0))
        store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
    store.close()


def _read_loop(config: StoreConfig, runs: int, stop: Any, results: Any) -> None:
    """Child process: count rows per shard until told to stop; every shard seen must be complete."""
    store = Store.open(config)
    reads, problems = 0, []
    full = {"tokens": TOKEN_ROWS * runs, "interventions": INTERVENTION_ROWS * runs}
    while not stop.is_set() or reads < 2:
        try:
            for table, expected in full.items():
                counts = read.query(f"SELECT shard_id, count(*) AS n FROM {table} GROUP BY shard_id", store=store)
                per_shard = zip(counts.column("shard_id").to_pylist(), counts.column("n").to_pylist(), strict=True)
                problems += [f"{table} shard {s}: {n} rows" for s, n in per_shard if n != expected]
            reads += 1
            time.sleep(0.1)  # a polling UI, not a spin loop: leave the 2 cores to the writers
        except Exception as error:  # the point of the test: record any failure of a reader
            problems.append(f"read failed: {error!r}")
    results.put((reads, problems))
    store.close()


def _job_with_shards(store: Store, shards: int) -> tuple[int, list[int], Shards]:
    spec = JobSpec(model="tiny", saes=["tiny-res/blocks.0", "tiny-res/blocks.1"], tokens="tiny", sequences_per_shard=2)
    job_id = store.create_job(spec, VERSIONS)
    run_ids = store.add_runs(job_id, [run_meta(0), run_meta(1)])
    ranges = [(SEQUENCES_PER_SHARD * i, SEQUENCES_PER_SHARD * (i + 1)) for i in range(shards)]
    return job_id, run_ids, list(zip(store.add_shards(job_id, ranges), ranges, strict=True))


def test_four_writers_and_a_reader_every_row_exactly_once(store: Store, store_config: StoreConfig) -> None:
    job_id, run_ids, shards = _job_with_shards(store, WRITERS * SHARDS_PER_WRITER)
    stop, results = SPAWN.Event(), SPAWN.Queue()
    reader = SPAWN.Process(target=_read_loop, args=(store_config, len(run_ids), stop, results))
    writers = [
        SPAWN.Process(target=_write_shards, args=(store_config, job_id, run_ids, shards[w::WRITERS]))
        for w in range(WRITERS)
    ]
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=HANG_GUARD_S)
    stop.set()
    reads, problems = results.get(timeout=HANG_GUARD_S)
    reader.join(timeout=30)

    assert [w.exitcode for w in writers] == [0] * WRITERS
    assert problems == []
    assert reads >= 2
    _assert_exactly_once(store, job_id, shards, len(run_ids))
    progress = store.progress(job_id)
    assert (progress.shards_done, progress.shards_total, progress.status) == (len(shards), len(shards), "done")
    assert progress.tokens_done == len(shards) * TOKEN_ROWS


def _assert_exactly_once(store: Store, job_id: int, shards: list, runs: int, writers: int = WRITERS) -> None:
    counts = read.query(
        """SELECT count(*) AS rows,
                  (SELECT count(*) FROM (SELECT DISTINCT run_id, sequence, position, intervention, sample
                                         FROM interventions)) AS keys,
                  count(DISTINCT shard_id) AS shards,
                  count(*) FILTER (WHERE kl % 1 = 0.5) AS bad
           FROM interventions""",
        store=store,
    ).to_pylist()[0]
    assert counts == {"rows": len(shards) * INTERVENTION_ROWS * runs, "keys": len(shards) * INTERVENTION_ROWS * runs,
                      "shards": len(shards), "bad": 0}  # fmt: skip
    sums = read.query(
        "SELECT sum(n) AS n, count(DISTINCT shard_id) AS shards, sum(kl_sum) AS kl FROM intervention_sums", store=store
    ).to_pylist()[0]  # written with each shard and replaced with it on a retry
    totals = read.query("SELECT count(*) AS n, sum(kl::DOUBLE) AS kl FROM interventions", store=store).to_pylist()[0]
    assert (sums["n"], sums["shards"]) == (totals["n"], len(shards))
    assert sums["kl"] == pytest.approx(totals["kl"], rel=1e-12)
    retried = [shard_id for w in range(writers) for shard_id, _ in shards[w::writers][:RETRIED_PER_WRITER]]
    salts = read.query(
        "SELECT DISTINCT shard_id, kl % 1000 - position AS salt FROM interventions"
        " WHERE shard_id IN (SELECT unnest(?))",
        [retried],
        store=store,
    ).to_pylist()
    assert sorted(salts, key=lambda r: r["shard_id"]) == [{"shard_id": s, "salt": 1.0} for s in sorted(retried)]


def _write_then_hang(config: StoreConfig, job_id: int, run_ids: list[int], shard: tuple, ready: Any) -> None:
    """Child process: do a shard's whole write inside its transaction, signal, and wait there to be killed."""
    store = Store.open(config)
    unpatched = lake.with_retries

    def hang_before_commit(conn: Any, work: Any, **kwargs: Any) -> Any:
        def work_then_hang() -> None:
            work()
            ready.set()
            time.sleep(600)

        return unpatched(conn, work_then_hang, **kwargs)

    lake.with_retries = hang_before_commit  # fault injection into this child only
    shard_id, seq_range = shard
    store.write_shard(job_id, shard_id, _records(run_ids, seq_range, salt=1.0, positions=4 * POSITIONS))


def _rewrite_forever(config: StoreConfig, job_id: int, run_ids: list[int], shard: tuple) -> None:
    """Child process: rewrite one shard again and again, alternating its size, until killed."""
    store = Store.open(config)
    shard_id, seq_range = shard
    for attempt in range(10_000):
        positions = POSITIONS * (1 + attempt % 2) * 50
        store.write_shard(job_id, shard_id, _records(run_ids, seq_range, salt=0.0, positions=positions))


def _shard_counts(store: Store, shard_id: int) -> tuple[int, int]:
    row = read.query(
        "SELECT (SELECT count(*) FROM tokens WHERE shard_id = $s) AS t,"
        " (SELECT count(*) FROM interventions WHERE shard_id = $s) AS i",
        {"s": shard_id},
        store=store,
    ).to_pylist()[0]
    return row["t"], row["i"]


def test_writer_killed_inside_a_shard_write_leaves_no_partial_shard(store: Store, store_config: StoreConfig) -> None:
    job_id, run_ids, shards = _job_with_shards(store, 2)
    store.write_shard(job_id, shards[0][0], _records(run_ids, shards[0][1], salt=0.0))
    ready = SPAWN.Event()
    child = SPAWN.Process(target=_write_then_hang, args=(store_config, job_id, run_ids, shards[0], ready))
    child.start()
    assert ready.wait(timeout=120), "child never reached the point inside its transaction"
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL

    # The earlier attempt (salt 0, POSITIONS) is intact; nothing of the killed one shows.
    assert _shard_counts(store, shards[0][0]) == (2 * TOKEN_ROWS, 2 * INTERVENTION_ROWS)
    kls = read.query("SELECT DISTINCT kl % 1000 - position AS salt FROM interventions", store=store)
    assert kls.column("salt").to_pylist() == [0.0]

    bigger = _records(run_ids, shards[0][1], salt=1.0, positions=4 * POSITIONS)
    written = store.write_shard(job_id, shards[0][0], bigger)
    assert _shard_counts(store, shards[0][0]) == (written.token_rows, written.intervention_rows)
    assert written.token_rows == 2 * 4 * TOKEN_ROWS


def test_writer_killed_at_a_random_moment_leaves_a_whole_attempt(store: Store, store_config: StoreConfig) -> None:
    job_id, run_ids, shards = _job_with_shards(store, 1)
    child = SPAWN.Process(target=_rewrite_forever, args=(store_config, job_id, run_ids, shards[0]))
    child.start()
    deadline = time.monotonic() + 120
    while _shard_counts(store, shards[0][0]) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.7)  # a few more rewrites, then kill wherever it is
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)

    sizes = {positions: (2 * SEQUENCES_PER_SHARD * positions, 2 * SEQUENCES_PER_SHARD * positions * len(INTERVENTIONS))
             for positions in (POSITIONS * 50, POSITIONS * 100)}  # fmt: skip
    assert _shard_counts(store, shards[0][0]) in sizes.values()
    written = store.write_shard(job_id, shards[0][0], _records(run_ids, shards[0][1], salt=0.0))
    assert _shard_counts(store, shards[0][0]) == (written.token_rows, written.intervention_rows)
    assert isinstance(read.query("SELECT count(*) FROM token_gaps", store=store), pa.Table)


# --- One shard written by several processes at once (a redelivered shard still running) --------------

RACE_POSITIONS = 256  # 2 runs x 2 sequences x 256 positions: 1024 token rows per copy
RACERS = 4
# (writers, spread): writer j of a round starts spread * j / (writers - 1) seconds after the round opens
RACE_ROUNDS = [(writers, spread) for writers in (2, 3, 4) for spread in (0.0, 0.1, 0.3)]


def _race(config: StoreConfig, job_id: int, run_ids: list[int], shards: Shards, me: int, barrier: Any) -> None:
    """Child process: in each round, wait for the others, sleep this writer's offset, write the round's shard."""
    store = Store.open(config)
    for (writers, spread), (shard_id, seq_range) in zip(RACE_ROUNDS, shards, strict=True):
        barrier.wait()
        if me < writers:
            time.sleep(spread * me / (writers - 1))
            store.write_shard(job_id, shard_id, _records(run_ids, seq_range, salt=float(me), positions=RACE_POSITIONS))
    store.close()


def _table_counts(store: Store, shard_id: int) -> dict[str, int]:
    """Rows of one shard in every record table (tokens, interventions and each rollup)."""
    tables = [table for table in RECORD_TABLES if table != "runs"]
    return {table: _count(store, f"SELECT count(*) FROM {table} WHERE shard_id = {shard_id}") for table in tables}


def _salts(store: Store, shard_id: int) -> list[float]:
    salts = read.query(
        "SELECT DISTINCT kl % 1000 - position AS salt FROM interventions WHERE shard_id = $s",
        {"s": shard_id},
        store=store,
    )
    return salts.column("salt").to_pylist()


def _count(store: Store, sql: str) -> int:
    return read.query(sql, store=store).column(0)[0].as_py()


def test_simultaneous_writes_of_one_shard_leave_exactly_one_copy(store: Store, store_config: StoreConfig) -> None:
    job_id, run_ids, shards = _job_with_shards(store, len(RACE_ROUNDS))
    barrier = SPAWN.Barrier(RACERS, timeout=HANG_GUARD_S)  # every round waits for all four
    racers = [SPAWN.Process(target=_race, args=(store_config, job_id, run_ids, shards, me, barrier))
              for me in range(RACERS)]  # fmt: skip
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=HANG_GUARD_S)
    assert [racer.exitcode for racer in racers] == [0] * RACERS

    token_rows = 2 * SEQUENCES_PER_SHARD * RACE_POSITIONS
    for (writers, spread), (shard_id, seq_range) in zip(RACE_ROUNDS, shards, strict=True):
        salts = _salts(store, shard_id)
        assert len(salts) == 1 and salts[0] in range(writers), (writers, spread, salts)
        # One copy, rollups included: the same counts as the winner's records written once, alone.
        [alone] = store.add_shards(job_id, [seq_range])
        store.write_shard(job_id, alone, _records(run_ids, seq_range, salt=salts[0], positions=RACE_POSITIONS))
        counts = _table_counts(store, shard_id)
        assert counts == _table_counts(store, alone), (writers, spread)
        assert (counts["tokens"], counts["interventions"]) == (token_rows, token_rows * len(INTERVENTIONS))
    assert _count(store, "SELECT sum(n) FROM intervention_sums") == _count(store, "SELECT count(*) FROM interventions")


# --- Writers and openers that queue instead of giving up -----------------------------------------------

OPENERS = 4
BUSY_WRITERS = 8
SHARDS_PER_BUSY_WRITER = 6  # 48 shard writes from 8 processes beside the CPU hogs
HOGS = int(os.environ.get("SAEGAP_TEST_HOGS", "4"))  # CPU busy-loop processes beside the 8 writers


def _open_and_create_a_job(config: StoreConfig, barrier: Any, results: Any) -> None:
    """Child process: open the (new) store the moment the others do, store a job, report its id or error."""
    barrier.wait()
    try:
        with Store.open(config) as store:
            spec = JobSpec(model="tiny", saes=["tiny-res/blocks.0"], tokens="tiny")
            results.put(store.create_job(spec, VERSIONS))
    except Exception as error:  # the point of the test: report any failure to open
        results.put(repr(error))


def test_processes_opening_a_new_store_at_once_all_succeed(store_config: StoreConfig) -> None:
    barrier, results = SPAWN.Barrier(OPENERS, timeout=HANG_GUARD_S), SPAWN.Queue()
    openers = [SPAWN.Process(target=_open_and_create_a_job, args=(store_config, barrier, results))
               for _ in range(OPENERS)]  # fmt: skip
    for opener in openers:
        opener.start()
    outcomes = [results.get(timeout=HANG_GUARD_S) for _ in openers]
    for opener in openers:
        opener.join(timeout=HANG_GUARD_S)
    assert all(isinstance(outcome, int) for outcome in outcomes), outcomes
    with Store.open(store_config) as store:
        assert sorted(job.id for job in store.list_jobs()) == sorted(outcomes)
        assert {table: _count(store, f"SELECT count(*) FROM {table}") for table in RECORD_TABLES} == dict.fromkeys(
            RECORD_TABLES, 0
        )  # every relation made once, none missing


def test_threads_opening_different_new_stores_at_once_all_succeed(tmp_path: Path) -> None:
    """One process, several threads, each creating its own store (the UI's warm-up beside a test's store): the
    job database's migrations must not cross (Alembic's context is one per process)."""
    configs = [StoreConfig(data_dir=tmp_path / f"store{i}") for i in range(OPENERS)]
    barrier = threading.Barrier(OPENERS, timeout=HANG_GUARD_S)

    def open_and_count(config: StoreConfig) -> int:
        barrier.wait()
        with Store.open(config) as store:
            return len(store.list_jobs())

    with ThreadPoolExecutor(OPENERS) as pool:
        assert list(pool.map(open_and_count, configs)) == [0] * OPENERS  # any crossed migration raises here


def _hog(stop: Any) -> None:
    """Child process: spin on the CPU until told to stop (pushes the load average up)."""
    while not stop.is_set():
        sum(range(100_000))


def test_eight_writers_under_cpu_load_all_land(tmp_path: Path) -> None:
    config = StoreConfig(data_dir=tmp_path / "store")  # the SQLite catalog: the one that starved
    stop = SPAWN.Event()
    hogs = [SPAWN.Process(target=_hog, args=(stop,)) for _ in range(HOGS)]
    for hog in hogs:
        hog.start()
    try:
        with Store.open(config) as store:
            job_id, run_ids, shards = _job_with_shards(store, BUSY_WRITERS * SHARDS_PER_BUSY_WRITER)
            writers = [SPAWN.Process(target=_write_shards, args=(config, job_id, run_ids, shards[w::BUSY_WRITERS]))
                       for w in range(BUSY_WRITERS)]  # fmt: skip
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(timeout=HANG_GUARD_S)
            load = os.getloadavg()[0]
            assert [w.exitcode for w in writers] == [0] * BUSY_WRITERS, f"load average {load:.1f}"
            _assert_exactly_once(store, job_id, shards, len(run_ids), writers=BUSY_WRITERS)
            assert store.progress(job_id).shards_done == len(shards)
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    print(f"8 writers + {HOGS} CPU hogs: load average {load:.1f} when the writers finished")
