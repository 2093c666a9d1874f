"""Several hosts for real: network namespaces made by the test (root, iproute2).

The services host runs its own Redis (append-only), PostgreSQL (job tables and DuckLake catalog) and
SeaweedFS (the Parquet files, s3://). Two worker hosts each start `saegap worker` in an empty working
directory with only environment variables pointing at the services host: no disk is shared for
records. The test process joins the same bridge as an admin host (submit, status, counts).
Faults: the broker restarted mid-job, PostgreSQL down while shards are in flight, and one worker
host's link cut mid-shard. Every namespace and process is removed afterwards, even on failure.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from schema.config import StoreConfig
from schema.spec import JobSpec
from schema.store import Store
from tests.hosts import network
from tests.hosts.broker import use_env_broker
from tests.hosts.services import Services
from tests.waiting import wait_finished
from tests.worker.conftest import save_tiny_assets
from tests.worker.test_api import expected_rows, record_counts, tiny_spec
from worker import api

pytestmark = pytest.mark.multihost
REPO = Path(__file__).resolve().parents[2]
WORKER_HOSTS = ("worker1", "worker2")
VISIBILITY_TIMEOUT_S = 8  # a shard of a vanished host is redelivered after this (shards here take ~1 s)
# A wait fails when nothing about the job changed for this long. kombu sweeps for unacknowledged
# messages past the visibility timeout only every ~100 s by default (unacked_restore_interval x throttle).


@dataclass
class Cluster:
    net: network.Network
    services: Services
    store: Store  # the admin host's view
    assets: dict[str, str]
    root: Path
    workers: dict[str, subprocess.Popen[bytes]]

    def log(self, host: str) -> str:
        return (self.root / f"{host}.log").read_text(errors="replace")


def worker_env(cluster_root: Path, services: Services, host: str) -> dict[str, str]:
    """Everything a worker host knows: PATH, its own home and caches, and where the services are."""
    home = cluster_root / host
    return {"PATH": f"{REPO / '.venv/bin'}:/usr/bin:/bin", "HOME": str(home / "home"), "HF_HOME": str(home / "hf"),
            "HF_HUB_OFFLINE": "1", "PYTHONHASHSEED": "0", "SAEGAP_DATA": str(home / "work" / "saegap-data"),
            "SAEGAP_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_S), **services.env()}  # fmt: skip


def start_worker(net: network.Network, services: Services, root: Path, host: str, model: str) -> subprocess.Popen:
    workdir = root / host / "work"
    workdir.mkdir(parents=True)
    argv = [*net.exec_prefix(host), "env", "-i", *(f"{k}={v}" for k, v in worker_env(root, services, host).items()),
            str(REPO / ".venv/bin/saegap"), "worker", "--models", model, "--name", f"saegap@{host}"]  # fmt: skip
    with (root / f"{host}.log").open("ab") as log:
        return subprocess.Popen(argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def wait_workers_ready(root: Path, workers: dict[str, subprocess.Popen]) -> None:
    """Until every worker logs that it is ready (each imports torch first); fails if one exits."""
    while not all(f"saegap@{host} ready." in (root / f"{host}.log").read_text(errors="replace") for host in workers):
        dead = {host: p.returncode for host, p in workers.items() if p.poll() is not None}
        assert not dead, f"workers exited: {dead}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = network.unavailable()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("hosts")
    assets = save_tiny_assets(root / "assets")
    net = network.Network(["services", *WORKER_HOSTS])
    services, store, workers = Services(net, root), None, {}
    saved = dict(os.environ)
    try:
        net.up()
        services.start()
        os.environ.update(services.env())
        use_env_broker()
        store = Store.open(StoreConfig.from_env())
        workers = {host: start_worker(net, services, root, host, assets["model"]) for host in WORKER_HOSTS}
        wait_workers_ready(root, workers)
        yield Cluster(net, services, store, assets, root, workers)
    finally:
        for process in workers.values():
            _end(process)
        if store is not None:
            store.close()
        services.stop()
        net.down()
        os.environ.clear()
        os.environ.update(saved)
        use_env_broker()


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=10)  # a cut-off worker's warm shutdown waits on its stuck shard: kill it
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def wait_for(store: Store, job_id: int, condition: Callable[[Store], bool], what: str) -> None:
    """Poll until condition(store) holds, while the job still runs."""
    while not condition(store):
        assert store.get_job(job_id).status not in ("done", "failed", "cancelled"), f"job ended before {what}"
        time.sleep(0.05)


def assert_exact(cluster: Cluster, job_id: int, spec: JobSpec, runs: int) -> None:
    tokens, interventions = expected_rows(spec, cluster.assets["tokens"], n_runs=runs)
    with Store.open(StoreConfig.from_env()) as reader:  # a fresh snapshot of every host's writes
        counts = record_counts(reader, job_id)
    assert counts == {"tokens": tokens, "token_keys": tokens, "interventions": interventions,
                      "intervention_keys": interventions}  # fmt: skip


def test_a_job_split_across_two_worker_hosts(cluster: Cluster) -> None:
    spec = tiny_spec(cluster.assets, n_sequences=8, sequences_per_shard=1, samples=2)
    job_id = api.enqueue(spec, store=cluster.store)
    job = wait_finished(cluster.store, job_id)
    assert (job.status, job.error, job.shards_done) == ("done", None, 8)
    assert {s.worker for s in cluster.store.list_shards(job_id)} == {f"saegap@{h}" for h in WORKER_HOSTS}
    assert_exact(cluster, job_id, spec, runs=2)
    for host in WORKER_HOSTS:  # nothing local: records on S3, jobs and catalog in PostgreSQL
        assert list((cluster.root / host / "work").iterdir()) == []


def test_broker_restarted_mid_job(cluster: Cluster) -> None:
    spec = tiny_spec(cluster.assets, n_sequences=8, sequences_per_shard=1, seed=1)
    job_id = api.enqueue(spec, store=cluster.store)
    wait_for(cluster.store, job_id, lambda s: s.get_job(job_id).shards_done >= 1, "a shard finished")
    cluster.services.restart_redis()  # queued and unacknowledged shards survive in the append-only file
    job = wait_finished(cluster.store, job_id)
    assert (job.status, job.error, job.shards_done) == ("done", None, 8)
    assert_exact(cluster, job_id, spec, runs=2)
    assert all("Connection to broker lost" in cluster.log(h) for h in WORKER_HOSTS)  # they did reconnect


def test_database_down_while_shards_are_in_flight(cluster: Cluster) -> None:
    spec = tiny_spec(cluster.assets, n_sequences=8, sequences_per_shard=1, seed=2)
    job_id = api.enqueue(spec, store=cluster.store)
    wait_for(cluster.store, job_id, lambda s: any(x.status == "running" for x in s.list_shards(job_id)), "a start")
    retries_before = sum(cluster.log(h).count(" retry: ") for h in WORKER_HOSTS)
    cluster.services.stop_postgres()
    while sum(cluster.log(h).count(" retry: ") for h in WORKER_HOSTS) == retries_before:
        assert all(p.poll() is None for p in cluster.workers.values())  # progress: a worker notices and retries
        time.sleep(0.1)
    cluster.services.start_postgres()
    cluster.store.engine.dispose()  # the admin host's pooled connections died with the server
    job = wait_finished(cluster.store, job_id)
    assert (job.status, job.error, job.shards_done) == ("done", None, 8)
    assert_exact(cluster, job_id, spec, runs=2)


def test_a_worker_host_cut_off_mid_shard(cluster: Cluster) -> None:
    spec = tiny_spec(cluster.assets, n_sequences=6, sequences_per_shard=1, samples=4, seed=3)
    job_id = api.enqueue(spec, store=cluster.store)
    victim = "saegap@worker1"

    def running_on_victim(store: Store) -> bool:
        return any(s.status == "running" and s.worker == victim for s in store.list_shards(job_id))

    wait_for(cluster.store, job_id, running_on_victim, "a shard ran on worker1")
    cluster.net.cut("worker1")
    (cut_shard,) = [s for s in cluster.store.list_shards(job_id) if s.status == "running" and s.worker == victim]
    job = wait_finished(cluster.store, job_id)  # worker2 takes the shard after the visibility timeout
    assert (job.status, job.error, job.shards_done) == ("done", None, 6)
    shard = cluster.store.get_shard(cut_shard.id)
    assert (shard.status, shard.worker) == ("done", "saegap@worker2") and shard.attempts >= 2
    assert_exact(cluster, job_id, spec, runs=2)
