"""Every failure of a job ends in a final state with one line: broken inputs, cheap checks, a
broker that is down, a worker that died (stale, then resumed), and jobs too large to start unasked."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from safetensors.torch import load_file, save_file

import schema.store
from saegap.cli import main
from saegap.evaluate_command import DEFAULT_SEQUENCES, with_default_sequences
from schema.config import StoreConfig
from schema.errors import JobStateError
from schema.jobs import as_utc
from schema.read import query
from schema.spec import JobSpec
from schema.store import Store
from tests.worker.test_api import record_counts, tiny_spec
from worker import api
from worker.commands import spec_args
from worker.errors import QueueUnavailable
from worker.size import MAX_ROWS, estimate

REPO = Path(__file__).resolve().parents[2]
SAE_HOOK = "blocks.2.hook_resid_pre"
WEIGHTS = "sae_weights.safetensors"


@pytest.fixture(autouse=True)
def _no_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)


def _sae_copy(assets: dict[str, str], root: Path) -> Path:
    return Path(shutil.copytree(assets[SAE_HOOK], root / "sae"))


def _rewrite_weights(sae: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    weights = load_file(str(sae / WEIGHTS))
    change(weights)
    save_file(weights, str(sae / WEIGHTS))


def truncated_weights(sae: Path) -> None:
    data = (sae / WEIGHTS).read_bytes()
    (sae / WEIGHTS).write_bytes(data[: len(data) // 2])


def garbage_weights(sae: Path) -> None:
    (sae / WEIGHTS).write_bytes(np.random.default_rng(0).bytes(4096))


def mismatched_shapes(sae: Path) -> None:
    _rewrite_weights(sae, lambda w: w.update(W_enc=torch.zeros(16, 128)))  # cfg.json says d_in = 32


def bad_cfg(sae: Path) -> None:
    (sae / "cfg.json").write_text("{not json")


def cfg_without_fields(sae: Path) -> None:
    (sae / "cfg.json").write_text(json.dumps({"architecture": "standard"}))


def missing_cfg(sae: Path) -> None:
    (sae / "cfg.json").unlink()


def nan_weights(sae: Path) -> None:
    _rewrite_weights(sae, lambda w: w["W_dec"].__setitem__((0, 0), float("nan")))


def inf_weights(sae: Path) -> None:
    _rewrite_weights(sae, lambda w: w["b_enc"].__setitem__(3, float("inf")))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (truncated_weights, "cannot load the SAE in"),
        (garbage_weights, "cannot load the SAE in"),
        (mismatched_shapes, "cannot load the SAE in"),
        (bad_cfg, "cannot load the SAE in"),
        (cfg_without_fields, "cannot load the SAE in"),
        (missing_cfg, "is not an SAE directory (no cfg.json)"),
        (nan_weights, "has NaN or infinite weights: W_dec (1 of 4096)"),
        (inf_weights, "has NaN or infinite weights: b_enc (1 of 128)"),
    ],
)
def test_broken_sae_fails_the_job_with_one_line(
    tiny_assets: dict[str, str], tmp_store: Store, tmp_path: Path, damage: Callable[[Path], None], message: str
) -> None:
    sae = _sae_copy(tiny_assets, tmp_path)
    damage(sae)
    assert_fails_before_writing(tiny_spec(tiny_assets, saes=[str(sae)]), tmp_store, message)


def pickled_tokens(path: Path) -> Path:
    path.write_bytes(pickle.dumps(np.ones((4, 8), dtype=np.int64)))
    return path


def text_tokens(path: Path) -> Path:
    path.write_text("1 2 3 4\n5 6 7 8\n")
    return path


def directory_tokens(path: Path) -> Path:
    path.mkdir()
    return path


def zero_width_tokens(path: Path) -> Path:
    np.save(path, np.zeros((4, 0), dtype=np.int64))
    return path.with_suffix(".npy")


def float_tokens(path: Path) -> Path:
    np.save(path, np.ones((4, 8), dtype=np.float32))
    return path.with_suffix(".npy")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (pickled_tokens, "is not a readable .npy array"),
        (text_tokens, "is not a readable .npy array"),
        (directory_tokens, "is a directory"),
        (zero_width_tokens, "got shape (4, 0)"),
        (float_tokens, "must be a 2-D integer array"),
    ],
)
def test_bad_token_file_fails_the_job_with_one_line(
    tiny_assets: dict[str, str], tmp_store: Store, tmp_path: Path, make: Callable[[Path], Path], message: str
) -> None:
    tokens = make(tmp_path / "tokens.npy")
    assert_fails_before_writing(tiny_spec(tiny_assets, tokens=str(tokens), n_sequences=None), tmp_store, message)


def test_model_with_nan_outputs_is_refused(tiny_assets: dict[str, str], tmp_store: Store, tmp_path: Path) -> None:
    model = Path(shutil.copytree(tiny_assets["model"], tmp_path / "model"))
    weights = load_file(str(model / "model.safetensors"))
    weights["unembed.W_U"][:, 5] = float("nan")
    save_file(weights, str(model / "model.safetensors"))
    spec = tiny_spec(tiny_assets, model=str(model), saes=[tiny_assets[SAE_HOOK]])
    assert_fails_before_writing(spec, tmp_store, "NaN or infinite values on the fit sequences at the model's output")


def test_position_beyond_the_context_is_refused_before_the_model_loads(
    tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: object) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("worker.prepare.cached_model", no_model)
    spec = tiny_spec(tiny_assets, scope={"kind": "single_token", "position": 1000})
    assert_fails_before_writing(spec, tmp_store, "target position 1000 is beyond the context of 24 tokens")


def assert_fails_before_writing(spec: object, store: Store, message: str) -> None:
    job_id = api.submit(spec, store=store)
    job = api.get_job(job_id, store=store)
    assert job.status == "failed", (job.status, job.error)
    assert message in job.error and "\n" not in job.error and "Traceback" not in job.error
    assert store.job_run_ids(job_id) == set() and store.list_shards(job_id) == []
    assert record_counts(store, job_id)["tokens"] == 0


def test_unexpected_error_fails_the_job_with_one_line_and_logs_the_traceback(
    tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    monkeypatch.setattr("worker.steps.evaluate_shard", broken)
    job_id = api.submit(tiny_spec(tiny_assets), store=tmp_store)
    job = api.get_job(job_id, store=tmp_store)
    assert (job.status, job.error) == ("failed", "RuntimeError: CUDA error: an illegal memory access; was encountered")
    assert [s.status for s in tmp_store.list_shards(job_id)] == ["failed", "pending"]
    failure = [r for r in caplog.records if r.getMessage().startswith(f"job {job_id} failed")]
    assert failure and failure[0].exc_info is not None  # the traceback is in the log


# --- the CLI: defaults, sizes, broker -------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """SAEGAP_DATA in tmp_path, and the job API's default store opened afresh from it (not an earlier test's)."""
    monkeypatch.delenv("SAEGAP_DATABASE_URL", raising=False)
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "store"))
    schema.store.forget_process_stores()
    yield tmp_path / "store"
    schema.store.forget_process_stores()


def tiny_flags(assets: dict[str, str]) -> list[str]:
    return ["--model", assets["model"], "--sae", assets[SAE_HOOK], "--tokens", assets["tokens"], "--device", "cpu",
            "--interventions", "sae,eps_random"]  # fmt: skip


def job_count(data_dir: Path) -> int:
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        return len(store.list_jobs())


def test_a_token_file_defaults_to_all_its_sequences(tiny_assets: dict[str, str], data_dir: Path) -> None:
    """README's `--tokens ./tokens.npy`: the file's 16 sequences, not the demo's 256."""
    assert main(["evaluate", *tiny_flags(tiny_assets)]) == 0
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        job = store.get_job(1)
    assert (job.status, job.spec.n_sequences, job.tokens_done) == ("done", None, 16 * 24)
    assert with_default_sequences(JobSpec()).n_sequences == DEFAULT_SEQUENCES  # the demo set keeps 256
    assert with_default_sequences(JobSpec(tokens=tiny_assets["tokens"])).n_sequences is None


def test_a_job_over_the_row_limit_asks_for_yes(
    tiny_assets: dict[str, str], data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = [*tiny_flags(tiny_assets), "--samples", "10000", "--n-sequences", "1"]
    size = estimate(JobSpec(model="m", saes=["s"], tokens=tiny_assets["tokens"], n_sequences=1, samples=10_000,
                                 interventions=["sae", "eps_random"]))  # fmt: skip
    assert size.rows == 1 * 24 * 1 * (1 + 1 + 10_000)
    monkeypatch.setenv("SAEGAP_MAX_ROWS", str(size.rows - 1))
    for command in ("evaluate", "submit"):
        assert main([command, *flags]) == 2
        assert "would write about 0.2 M rows" in capsys.readouterr().err
    assert job_count(data_dir) == 0
    parser = __import__("argparse").ArgumentParser()
    spec_args.configure(parser)
    args = parser.parse_args([*flags, "--yes"])
    assert spec_args.size_refusal(spec_args.spec_from_args(args), args) is None


def test_the_row_limit_spares_the_demo_job() -> None:
    demo = with_default_sequences(JobSpec())
    assert estimate(demo).rows == DEFAULT_SEQUENCES * 128 * 4 * (1 + 4 + 6)  # 1.4 M: no question asked
    assert estimate(demo).rows < MAX_ROWS < estimate(demo.model_copy(update={"samples": 10_000, "n_sequences": 1})).rows


@pytest.fixture
def dead_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"redis://127.0.0.1:{port}/0"
    from worker.celery_app import app, apply_env

    monkeypatch.setenv("SAEGAP_BROKER_URL", url)
    apply_env(app)
    yield url
    monkeypatch.undo()
    apply_env(app)


def test_submit_with_the_broker_down_stores_nothing(
    tiny_assets: dict[str, str], data_dir: Path, dead_broker: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", *tiny_flags(tiny_assets)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"saegap: cannot reach the broker at {dead_broker}") and err.count("\n") == 1
    assert job_count(data_dir) == 0


def test_a_publish_that_fails_removes_the_job(
    tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise ConnectionError("broker went away")

    monkeypatch.setenv("SAEGAP_BROKER_URL", "redis://127.0.0.1:6379/7")
    monkeypatch.setattr(api, "check_broker", lambda: None)
    monkeypatch.setattr(api, "_send_plan", refuse)
    with pytest.raises(QueueUnavailable, match="broker went away"):
        api.enqueue(tiny_spec(tiny_assets), store=tmp_store)
    assert api.list_jobs(store=tmp_store) == []


# --- a worker that died: stale, then resumed -------------------------------------------------------


def job_records(store: Store, job_id: int) -> dict[str, pa.Table]:
    """The job's records without their ids (run, job, shard), in key order: equal for equal work."""
    keys = {"tokens": "sequence, position", "interventions": "sequence, position, intervention, sample"}
    return {
        table: query(
            f"SELECT t.* EXCLUDE (run_id, shard_id), r.sae FROM {table} t JOIN runs r USING (run_id) "
            f"WHERE r.job_id = $job ORDER BY r.sae, {key}",
            {"job": job_id},
            store=store,
        )
        for table, key in keys.items()
    }


def wait_for_shards(data_dir: Path, job_id: int, done: int, process: subprocess.Popen[bytes]) -> int:
    """Poll the job's progress until `done` shards are finished (or the process ends); returns the count."""
    while process.poll() is None:
        with Store.open(StoreConfig(data_dir=data_dir)) as store:
            jobs_found = store.list_jobs()
            finished = jobs_found[0].shards_done if jobs_found and jobs_found[0].id == job_id else 0
        if finished >= done:
            return finished
        time.sleep(0.05)
    raise AssertionError(f"saegap evaluate ended (rc {process.returncode}) before {done} shards were done")


def test_killed_evaluate_is_stale_and_resumes_to_the_same_records(
    tiny_assets: dict[str, str], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*tiny_flags(tiny_assets), "--sequences-per-shard", "1", "--samples", "16"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "saegap.cli", "evaluate", *flags], env=env, cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_shards(data_dir, 1, 2, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        killed = store.get_job(1)
    assert killed.status == "running" and 2 <= killed.shards_done < 16
    assert api.stale_reason(killed) == f"its process {process.pid} on {socket.gethostname()} is gone"

    assert main(["status", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"job 1: running (stale: its process {process.pid} on ")
    assert main(["jobs"]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["1", "stale"]

    assert main(["resume", "1"]) == 0
    assert capsys.readouterr().out.strip() == "job 1: done (shards 16/16)"
    assert main(["resume", "1"]) == 1 and "job 1 is done: nothing to resume" in capsys.readouterr().err
    assert main(["evaluate", *flags]) == 0  # the same job, uninterrupted
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        resumed, whole = job_records(store, 1), job_records(store, 2)
        assert [s.attempts for s in store.list_shards(1)][: killed.shards_done] == [1] * killed.shards_done
        assert record_counts(store, 1) == record_counts(store, 2)
        assert store.get_job(1).tokens_done == store.get_job(2).tokens_done == 16 * 24
    for table in ("tokens", "interventions"):
        assert resumed[table].num_rows > 0 and resumed[table].equals(whole[table]), table


def test_a_live_job_is_not_resumed_and_a_silent_one_is_stale(tiny_assets: dict[str, str], tmp_store: Store) -> None:
    job_id = api.create(tiny_spec(tiny_assets), store=tmp_store)
    tmp_store.set_job_status(job_id, "running")
    tmp_store.touch_job(job_id, f"{socket.gethostname()}:{os.getpid()}")  # this process: alive
    job = tmp_store.get_job(job_id)
    assert api.stale_reason(job) is None
    with pytest.raises(JobStateError, match="resume a job only once its worker is gone"):
        api.resume(job_id, store=tmp_store)
    later = as_utc(job.heartbeat_at) + timedelta(seconds=api.STALE_AFTER_S + 60)
    tmp_store.touch_job(job_id, "worker-1@elsewhere")
    assert api.stale_reason(tmp_store.get_job(job_id), now=later).startswith("no worker has reported for")


def test_resume_with_a_queue_reopens_the_job_and_sends_its_plan(
    tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[int, str]] = []
    monkeypatch.setenv("SAEGAP_BROKER_URL", "redis://127.0.0.1:6379/7")
    monkeypatch.setattr(api, "check_broker", lambda: None)
    monkeypatch.setattr(api, "_send_plan", lambda job_id, model: sent.append((job_id, model)))
    job_id = api.create(tiny_spec(tiny_assets), store=tmp_store)
    first, second = tmp_store.add_shards(job_id, [(0, 4), (4, 6)])
    tmp_store.start_shard(first, "w@gone")
    tmp_store.finish_shard(first, rows_written=10, tokens=96)
    tmp_store.start_shard(second, "w@gone")
    tmp_store.fail_shard(second, "WorkerLostError: died")
    tmp_store.set_job_status(job_id, "failed", "WorkerLostError: died")
    job = api.resume(job_id, store=tmp_store)
    assert (job.status, job.error, job.finished_at, sent) == ("queued", None, None, [(job_id, tiny_assets["model"])])
    assert [s.status for s in tmp_store.list_shards(job_id)] == ["done", "pending"]
