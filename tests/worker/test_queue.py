"""The queue end to end: real Redis (db 7), `saegap worker` processes, the store in a tmp dir."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schema.config import StoreConfig
from schema.store import Store
from tests.hosts.broker import broker_env
from tests.waiting import FINISHED, wait_all_finished, wait_finished
from tests.worker.test_api import expected_rows, record_counts, tiny_spec
from worker import api

BROKER = "redis://127.0.0.1:6379/7"
REPO = Path(__file__).resolve().parents[2]


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(BROKER).ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    data = tmp_path_factory.mktemp("queue-store")
    with broker_env({"SAEGAP_DATA": str(data), "SAEGAP_BROKER_URL": BROKER, "SAEGAP_VISIBILITY_TIMEOUT": "6"}) as env:
        yield env


@pytest.fixture(scope="module")
def store(env: dict[str, str]) -> Iterator[Store]:
    with Store.open(StoreConfig.from_env()) as opened:
        yield opened


def start_worker(env: dict[str, str], model: str, name: str) -> subprocess.Popen[bytes]:
    argv = [str(REPO / ".venv/bin/saegap"), "worker", "--models", model, "--name", f"{name}@%h"]
    return subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def workers(env: dict[str, str], tiny_assets: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = [start_worker(env, tiny_assets["model"], f"w{i}") for i in range(2)]
    yield started
    for process in started:
        process.terminate()
    for process in started:
        process.wait(timeout=30)


def fresh_counts(job_id: int) -> dict[str, int]:
    with Store.open(StoreConfig.from_env()) as reader:  # a new connection sees every process's writes
        return record_counts(reader, job_id)


def test_submit_cli_to_worker_to_status(
    env: dict[str, str], store: Store, workers: list[subprocess.Popen[bytes]], tiny_assets: dict[str, str]
) -> None:
    flags = ["--model", tiny_assets["model"], "--sae", tiny_assets["blocks.1.hook_resid_pre"], "--sae",
             tiny_assets["blocks.1.attn.hook_z"], "--tokens", tiny_assets["tokens"], "--n-sequences", "6",
             "--sequences-per-shard", "2", "--samples", "2", "--device", "cpu"]  # fmt: skip
    saegap = str(REPO / ".venv/bin/saegap")
    submitted = subprocess.run([saegap, "submit", *flags], env=env, capture_output=True, text=True, check=True)
    job_id = int(submitted.stdout.strip())
    wait_finished(store, job_id)
    status = subprocess.run([saegap, "status", str(job_id)], env=env, capture_output=True, text=True, check=True)
    assert status.stdout.splitlines()[0] == f"job {job_id}: done"
    spec = tiny_spec(tiny_assets, n_sequences=6, samples=2)
    tokens, interventions = expected_rows(spec, tiny_assets["tokens"], n_runs=2)
    assert fresh_counts(job_id) == {"tokens": tokens, "token_keys": tokens, "interventions": interventions,
                                    "intervention_keys": interventions}  # fmt: skip


def test_twenty_jobs_over_two_workers_then_cancel(
    store: Store, workers: list[subprocess.Popen[bytes]], tiny_assets: dict[str, str]
) -> None:
    one_sae = [tiny_assets["blocks.2.hook_resid_pre"]]
    specs = [tiny_spec(tiny_assets, saes=one_sae, n_sequences=2, interventions=["sae", "eps_random"], seed=i)
             for i in range(20)]  # fmt: skip
    job_ids = [api.enqueue(spec, store=store) for spec in specs]
    wait_all_finished(store, job_ids)
    assert {store.get_job(j).status for j in job_ids} == {"done"}
    assert len({shard.worker for j in job_ids for shard in store.list_shards(j)}) == 2  # both workers took shards
    tokens = expected_rows(specs[0], tiny_assets["tokens"], 1)[0]
    assert all(fresh_counts(j)["tokens"] == tokens for j in job_ids[:3])

    long_job = api.enqueue(tiny_spec(tiny_assets, n_sequences=16, sequences_per_shard=1), store=store)
    while store.get_job(long_job).shards_done < 2:
        time.sleep(0.2)
    api.cancel(long_job, store=store)
    time.sleep(5)  # shards running at the cancel finish; the rest are skipped
    shards = store.list_shards(long_job)
    done = {s.id for s in shards if s.status == "done"}
    assert store.get_job(long_job).status == "cancelled" and 2 <= len(done) < 16
    assert not [s for s in shards if s.status == "running"]
    with Store.open(StoreConfig.from_env()) as reader:
        written = reader.reader().execute("SELECT DISTINCT shard_id FROM lake.tokens").fetchall()
    assert done <= {row[0] for row in written}
    assert fresh_counts(long_job)["tokens"] == len(done) * 24 * 2  # kept what it finished, exactly


def test_killed_worker_shard_finished_by_another(
    env: dict[str, str], store: Store, tiny_assets: dict[str, str], tmp_path: Path
) -> None:
    model_copy = shutil.copytree(tiny_assets["model"], tmp_path / "model-copy")  # its own queue, no other worker
    spec = tiny_spec(tiny_assets, model=str(model_copy), n_sequences=16, sequences_per_shard=1, samples=4)
    victim = start_worker(env, str(model_copy), "victim")
    job_id = api.enqueue(spec, store=store)
    while store.get_job(job_id).shards_done < 2:  # progress: the victim is alive and working
        assert victim.poll() is None and store.get_job(job_id).status not in FINISHED
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)  # mid-job: a shard is running and unacknowledged
    victim.wait()
    done_at_kill = store.get_job(job_id).shards_done
    rescuer = start_worker(env, str(model_copy), "rescuer")
    try:
        wait_finished(store, job_id)
    finally:
        rescuer.terminate()
        rescuer.wait(timeout=30)
    job = store.get_job(job_id)
    assert job.status == "done" and done_at_kill < 16
    assert "rescuer" in {s.worker.split("@")[0] for s in store.list_shards(job_id)}
    tokens, interventions = expected_rows(spec, tiny_assets["tokens"], n_runs=2)
    assert fresh_counts(job_id) == {"tokens": tokens, "token_keys": tokens, "interventions": interventions,
                                    "intervention_keys": interventions}  # fmt: skip
