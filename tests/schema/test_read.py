"""schema.read.query: exact rows through the views, refused writes, time limit, row cap."""

from __future__ import annotations

import pickle
from pathlib import Path

import pyarrow as pa
import pytest

from schema import read
from schema.config import StoreConfig
from schema.errors import QueryTimeoutError, RowLimitError, WriteRefusedError
from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.relations import RECORD_TABLES, VIEW_DDL
from schema.spec import JobSpec
from schema.store import Store
from tests.schema.records import VERSIONS, run_meta

REFUSED = [
    "INSERT INTO runs SELECT * FROM runs",
    "UPDATE interventions SET kl = 0",
    "DELETE FROM tokens",
    "CREATE TABLE x AS SELECT 1",
    "DROP TABLE tokens",
    "ALTER TABLE tokens ADD COLUMN x INT",
    "ATTACH ':memory:' AS other",
    "DETACH lake",
    "COPY tokens TO '/tmp/saegap-leak.csv'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "CALL ducklake_expire_snapshots('lake', older_than => now())",
    "EXPORT DATABASE '/tmp/saegap-export'",
    "EXPLAIN ANALYZE DELETE FROM tokens",
    "SELECT 1; DELETE FROM tokens",
    "VACUUM",
    "CHECKPOINT",
    "USE memory",
    "this is not sql",
]


def _tiny_shard(store: Store) -> tuple[int, int, int]:
    """One run, one sequence of 3 positions: BOS (not intervened), 1 and 2 (last: no next token)."""
    job_id = store.create_job(JobSpec(interventions=["sae", "eps_random"]), VERSIONS)
    (run_id,) = store.add_runs(job_id, [run_meta(4)])
    (shard_id,) = store.add_shards(job_id, [(0, 1)])
    tokens = pa.Table.from_pylist(
        [
            {"sequence": 0, "position": 0, "token_id": 50256, "token_text": "<bos>", "next_token_id": 10,
             "clean_loss": 3.0, "intervened": False},
            {"sequence": 0, "position": 1, "token_id": 10, "token_text": " the", "next_token_id": 11, "clean_loss": 2.0,
             "intervened": True, "norm": 4.0, "sae_norm": 3.5, "eps": 1.0, "cos_sim": 0.75, "l0": 12, "l1": 6.5},
            {"sequence": 0, "position": 2, "token_id": 11, "token_text": " cat", "next_token_id": None,
             "clean_loss": None, "intervened": True, "norm": 5.0, "sae_norm": 4.0, "eps": 2.0, "cos_sim": 0.5,
             "l0": 20, "l1": 8.0},
        ],
        schema=TOKEN_SCHEMA,
    )  # fmt: skip
    # (position, intervention, sample, kl, loss, loss_delta); sample 1 is a second eps_random draw
    rows = [(1, "sae", 0, 0.5, 2.75, 0.75), (1, "eps_random", 0, 0.125, 2.25, 0.25), (2, "sae", 0, 1.0, None, None),
            (2, "eps_random", 0, 0.0, None, None), (2, "eps_random", 1, 9.0, None, None)]  # fmt: skip
    names = ("position", "intervention", "sample", "kl", "loss", "loss_delta")
    interventions = pa.Table.from_pylist([{"sequence": 0} | dict(zip(names, r, strict=True)) for r in rows],
                                         schema=INTERVENTION_SCHEMA)  # fmt: skip
    store.write_shard(job_id, shard_id, {run_id: (tokens, interventions)})
    return job_id, run_id, shard_id


def test_token_gaps_exact_rows(tmp_store: Store) -> None:
    job_id, run_id, _ = _tiny_shard(tmp_store)
    rows = read.query(
        "SELECT job_id, run_id, layer, position, token_text, cos_sim, kl_sae, kl_eps_random, kl_zero_ablation,"
        " kl_gap, kl_ratio, loss_gap FROM token_gaps ORDER BY position",
        store=tmp_store,
    ).to_pylist()
    common = {"job_id": job_id, "run_id": run_id, "layer": 4, "kl_zero_ablation": None}
    assert rows == [
        common | {"position": 1, "token_text": " the", "cos_sim": 0.75, "kl_sae": 0.5, "kl_eps_random": 0.125,
                  "kl_gap": 0.375, "kl_ratio": 4.0, "loss_gap": 0.5},
        common | {"position": 2, "token_text": " cat", "cos_sim": 0.5, "kl_sae": 1.0, "kl_eps_random": 0.0,
                  "kl_gap": 1.0, "kl_ratio": None, "loss_gap": None},
    ]  # fmt: skip


def test_token_records_exact_rows(tmp_store: Store) -> None:
    _, run_id, shard_id = _tiny_shard(tmp_store)
    rows = read.query(
        "SELECT run_id, shard_id, hook_name, position, intervention, sample, kl, clean_loss, loss_delta, l0"
        " FROM token_records ORDER BY position, intervention, sample",
        store=tmp_store,
    ).to_pylist()
    keys = (run_id, shard_id, "blocks.4.hook_resid_pre")
    assert [tuple(row.values()) for row in rows] == [
        (*keys, 1, "eps_random", 0, 0.125, 2.0, 0.25, 12),
        (*keys, 1, "sae", 0, 0.5, 2.0, 0.75, 12),
        (*keys, 2, "eps_random", 0, 0.0, None, None, 20),
        (*keys, 2, "eps_random", 1, 9.0, None, None, 20),
        (*keys, 2, "sae", 0, 1.0, None, None, 20),
    ]


def test_intervention_sums_exact_rows_and_backfilled_on_open(tmp_store: Store) -> None:
    _, run_id, shard_id = _tiny_shard(tmp_store)
    sums = "SELECT * EXCLUDE (run_id, shard_id) FROM intervention_sums ORDER BY position, intervention"
    expected = [
        (1, "eps_random", 1, 0.125, 0.015625, 1, 0.25, 0.0625),
        (1, "sae", 1, 0.5, 0.25, 1, 0.75, 0.5625),
        (2, "eps_random", 2, 9.0, 81.0, 0, None, None),  # two samples summed
        (2, "sae", 1, 1.0, 1.0, 0, None, None),
    ]
    rows = read.query(sums, store=tmp_store).to_pylist()
    names = (
        "position",
        "intervention",
        "n",
        "kl_sum",
        "kl_sq_sum",
        "loss_delta_n",
        "loss_delta_sum",
        "loss_delta_sq_sum",
    )
    assert [tuple(row[name] for name in names) for row in rows] == expected
    keys = read.query("SELECT DISTINCT run_id, shard_id FROM intervention_sums", store=tmp_store).to_pylist()
    assert keys == [{"run_id": run_id, "shard_id": shard_id}]

    tmp_store.execute_write("DROP TABLE intervention_sums")  # a lake from before the table: filled on open
    reopened = Store.open(tmp_store.config)
    assert [tuple(row[n] for n in names) for row in read.query(sums, store=reopened).to_pylist()] == expected
    reopened.close()


def test_reads_that_are_allowed(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    assert read.query("WITH t AS (SELECT 2 AS x) SELECT x FROM t", store=tmp_store).to_pylist() == [{"x": 2}]
    assert read.query("FROM runs SELECT layer", store=tmp_store).to_pylist() == [{"layer": 4}]
    assert "kl_gap" in read.query("DESCRIBE token_gaps", store=tmp_store).column("column_name").to_pylist()
    shown = set(read.query("SHOW TABLES", store=tmp_store).column("name").to_pylist())
    assert {"runs", "tokens", "interventions", "token_records", "token_gaps"} <= shown
    assert read.query("EXPLAIN SELECT count(*) FROM tokens", store=tmp_store).num_rows == 1
    assert read.query("SELECT count(*) AS n FROM tokens WHERE position > ?", [0], store=tmp_store).to_pylist() == [
        {"n": 2}
    ]


def test_writes_and_non_reads_are_refused_and_change_nothing(tmp_store: Store) -> None:
    _tiny_shard(tmp_store)
    counts = "SELECT (SELECT count(*) FROM tokens) AS t, (SELECT count(*) FROM interventions) AS i"
    not_refused = []
    for sql in REFUSED:  # one store for all: each store open costs a second or two
        try:
            read.query(sql, store=tmp_store)
            not_refused.append(sql)
        except WriteRefusedError:
            pass
    assert not_refused == []
    assert read.query(counts, store=tmp_store).to_pylist() == [{"t": 3, "i": 5}]
    shown = read.query("SHOW TABLES", store=tmp_store).num_rows
    assert shown == len(RECORD_TABLES) + len(VIEW_DDL)  # no table created, none dropped


def test_reader_cannot_reach_files_outside_the_store(tmp_store: Store) -> None:
    with pytest.raises(WriteRefusedError, match="read_csv"):
        read.query("SELECT * FROM read_csv('/etc/passwd')", store=tmp_store)


def test_time_limit_interrupts(tmp_store: Store) -> None:
    with pytest.raises(QueryTimeoutError):
        read.query("SELECT count(*) FROM range(100000000000)", store=tmp_store, timeout_s=0.3)
    assert read.query("SELECT 1 AS one", store=tmp_store).to_pylist() == [{"one": 1}]  # connection still usable


def test_row_cap_raises_rather_than_truncating(tmp_store: Store) -> None:
    assert read.query("SELECT * FROM range(100)", store=tmp_store, max_rows=100).num_rows == 100
    with pytest.raises(RowLimitError, match="max_rows=99"):
        read.query("SELECT * FROM range(100)", store=tmp_store, max_rows=99)


def test_a_read_process_whose_parent_left_mid_statement_exits_quietly(tmp_store: Store) -> None:
    """The parent closes its end while a statement runs: the reply meets a broken pipe, and the read process
    ends with status 0 instead of a BrokenPipeError traceback."""
    process = read._ReadProcess(tmp_store.config, 2**30)
    slow = "SELECT count(*) FROM range(200000000) a, range(3) b WHERE a.range % 7 = b.range"
    request = {"sql": slow, "params": {}, "timeout_s": 60.0, "max_rows": 10, "max_bytes": 2**20}
    process._send(pickle.dumps(request))
    process.popen.stdout.close()  # the parent is gone before the answer
    process.popen.stdin.close()
    assert process.popen.wait(timeout=120) == 0
    process.kill()


def test_a_relative_data_dir_is_read_from_where_it_was_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SAEGAP_DATA=.work/store: read processes run in their own directory, yet open this store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAEGAP_DATA", "relative/store")
    config = StoreConfig.from_env()
    assert config.data_dir == tmp_path / "relative/store"
    with Store.open(config) as store:
        store.create_job(JobSpec(), VERSIONS)
        assert read.query("SELECT count(*) AS n FROM runs", store=store).column("n").to_pylist() == [0]
