"""The job API run embedded (no broker): records land exactly once, bad input fails with its message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from schema.read import query
from schema.spec import JobSpec
from schema.store import Store
from worker import api
from worker.interventions import INTERVENTIONS


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)


def expected_rows(spec: JobSpec, tokens_path: str, n_runs: int) -> tuple[int, int]:
    """(token rows, intervention rows) of an all-token job: every position recorded, non-BOS ones intervened."""
    tokens = np.load(tokens_path)[: spec.n_sequences]
    variants = sum(spec.samples if INTERVENTIONS[name].stochastic else 1 for name in spec.interventions)
    intervened = int((tokens != 0).sum())  # id 0 is BOS = EOS = PAD of the tiny tokenizer
    return tokens.size * n_runs, intervened * variants * n_runs


def record_counts(store: Store, job_id: int) -> dict[str, int]:
    """Rows and distinct keys of the job's records: equal counts mean nothing was duplicated."""
    sql = """
    SELECT (SELECT count(*) FROM tokens t JOIN runs r USING (run_id) WHERE r.job_id = $job) AS tokens,
           (SELECT count(DISTINCT (t.run_id, t.sequence, t.position)) FROM tokens t JOIN runs r USING (run_id)
             WHERE r.job_id = $job) AS token_keys,
           (SELECT count(*) FROM interventions i JOIN runs r USING (run_id) WHERE r.job_id = $job) AS interventions,
           (SELECT count(DISTINCT (i.run_id, i.sequence, i.position, i.intervention, i.sample))
              FROM interventions i JOIN runs r USING (run_id) WHERE r.job_id = $job) AS intervention_keys
    """
    return query(sql, {"job": job_id}, store=store).to_pylist()[0]


def tiny_spec(assets: dict[str, str], **fields: object) -> JobSpec:
    base = dict(
        model=assets["model"], saes=[assets["blocks.1.hook_resid_pre"], assets["blocks.1.attn.hook_z"]],
        tokens=assets["tokens"], n_sequences=6, sequences_per_shard=4, fit_sequences=4, device="cpu",
    )  # fmt: skip
    return JobSpec(**(base | fields))


def test_submit_embedded_writes_every_record_once(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    spec = tiny_spec(tiny_assets, samples=2)
    job_id = api.submit(spec, store=tmp_store)
    job = api.get_job(job_id, store=tmp_store)
    assert (job.status, job.error, job.shards_done, job.shards_total) == ("done", None, 2, 2)
    tokens, interventions = expected_rows(spec, tiny_assets["tokens"], n_runs=2)
    counts = record_counts(tmp_store, job_id)
    assert counts == {"tokens": tokens, "token_keys": tokens, "interventions": interventions,
                      "intervention_keys": interventions}  # fmt: skip
    assert job.tokens_done == tokens // 2  # one run's token positions
    assert job.versions["torch"] and job.versions["sae_lens"]
    progress = api.progress(job_id, store=tmp_store)
    assert (progress.shards_done, progress.eta_seconds) == (2, None)
    assert [j.id for j in api.list_jobs(store=tmp_store)] == [job_id]


def test_run_embedded_again_keeps_rows_exact(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    """A job that is run twice (e.g. a redelivered plan) reuses its runs and shards: no duplicate."""
    spec = tiny_spec(tiny_assets, saes=[tiny_assets["blocks.2.hook_resid_pre"]], interventions=["sae", "eps_random"])
    job_id = api.create(spec, store=tmp_store)
    first = api.run_embedded(job_id, store=tmp_store)
    tmp_store.set_job_status(job_id, "running")  # as if the plan message came back
    api.run_embedded(job_id, store=tmp_store)
    assert first.status == "done"
    assert len(tmp_store.job_run_ids(job_id)) == 1 and len(tmp_store.list_shards(job_id)) == 2
    counts = record_counts(tmp_store, job_id)
    assert counts["tokens"] == counts["token_keys"] == expected_rows(spec, tiny_assets["tokens"], 1)[0]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens": "/nonexistent/tokens.npy"}, "unknown token set"),
        ({"saes": ["/nonexistent/sae-dir"]}, "unknown SAE"),
        ({"n_sequences": 500}, "n_sequences=500"),
        ({"scope": {"kind": "single_token", "position": 40}}, "beyond the context"),
    ],
)
def test_bad_input_fails_job_with_message_and_no_records(
    tiny_assets: dict[str, str], tmp_store: Store, change: dict[str, object], message: str
) -> None:
    job_id = api.submit(tiny_spec(tiny_assets, **change), store=tmp_store)
    job = api.get_job(job_id, store=tmp_store)
    assert job.status == "failed" and message in job.error
    assert record_counts(tmp_store, job_id)["interventions"] == 0
    assert query("SELECT count(*) AS n FROM interventions", store=tmp_store).to_pylist() == [{"n": 0}]


def test_mismatched_model_and_sae_fails_before_records(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    """An SAE trained on another model's name (cfg metadata) is refused."""
    spec = tiny_spec(tiny_assets, model="demo")
    job_id = api.submit(spec, store=tmp_store)
    job = api.get_job(job_id, store=tmp_store)
    assert job.status == "failed" and "not 'demo'" in job.error
    assert query("SELECT count(*) AS n FROM tokens", store=tmp_store).to_pylist() == [{"n": 0}]


def test_cancelled_job_is_not_run(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    job_id = api.create(tiny_spec(tiny_assets), store=tmp_store)
    api.cancel(job_id, store=tmp_store)
    assert api.run_embedded(job_id, store=tmp_store).status == "cancelled"
    assert tmp_store.list_shards(job_id) == [] and record_counts(tmp_store, job_id)["tokens"] == 0


def test_enqueue_without_broker_refuses(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    with pytest.raises(api.QueueNotConfigured, match="SAEGAP_BROKER_URL"):
        api.enqueue(tiny_spec(tiny_assets), store=tmp_store)
    assert api.list_jobs(store=tmp_store) == []


def test_job_api_imports_no_model_library() -> None:
    """The UI and `saegap status` import the job API; it must not pull torch in."""
    code = (
        "import sys, worker.api, worker.tasks, worker.commands.status, saegap.cli; saegap.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'transformer_lens', 'sae_lens') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])  # fmt: skip
    assert result.stdout.strip() == "[]"


def test_model_queue_names_are_safe() -> None:
    assert api.model_queue("demo") == "saegap.demo"
    assert api.model_queue("/tmp/x y/model") == "saegap.tmp_x_y_model"
