"""A worker host whose models/ lacks the job's model: the job fails once, with the reason, and the task
is not redelivered in a loop. Real Redis (db 11) and a worker process whose SAEGAP_MODELS is empty."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from schema.config import StoreConfig
from schema.spec import JobSpec
from schema.store import Store
from tests.hosts.broker import broker_env
from worker import api

BROKER = "redis://127.0.0.1:6379/11"
REPO = Path(__file__).resolve().parents[2]


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(BROKER).ping())
    except redis.RedisError:
        return False


pytestmark = pytest.mark.skipif(not _redis_up(), reason="no Redis at 127.0.0.1:6379")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    with broker_env({"SAEGAP_DATA": str(tmp_path / "store"), "SAEGAP_BROKER_URL": BROKER}) as env:
        yield env


def test_worker_without_the_model_fails_the_job_once(env: dict[str, str], tmp_path: Path) -> None:
    empty_models = tmp_path / "no-models"
    empty_models.mkdir()
    log = tmp_path / "worker.log"
    argv = [str(REPO / ".venv/bin/saegap"), "worker", "--models", "demo", "--name", "bare@%h"]
    with log.open("wb") as out:  # this host's models/ is empty: it does not have `demo` nor `demo-res`
        worker = subprocess.Popen(argv, env={**env, "SAEGAP_MODELS": str(empty_models)}, cwd=tmp_path,
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        with Store.open(StoreConfig.from_env()) as store:
            job_id = api.enqueue(JobSpec(n_sequences=2, device="cpu"), store=store)
            while store.get_job(job_id).status not in ("failed", "done", "cancelled"):
                assert worker.poll() is None, log.read_text()[-2000:]  # progress: the worker is alive
                time.sleep(0.3)
            job = store.get_job(job_id)
            time.sleep(2)  # a redelivery loop would show more received tasks in the log by now
            # the first bundled thing the host lacks is named: the SAE (its dataset is the job's token set)
            assert job.status == "failed" and "unknown SAE 'demo-res'" in job.error, job.error
            assert store.list_shards(job_id) == []  # nothing planned, nothing written
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    assert log.read_text().count("Task saegap.plan_job[") <= 2  # received once, finished once: no loop
