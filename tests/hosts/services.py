"""The services host's own Redis, PostgreSQL and S3 server, started (and restarted) by the test."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

from tests.hosts.network import Network
from tests.s3 import server as s3

REDIS_PORT, PG_PORT = 6379, 5432
S3_PORTS = list(range(18000, 18012))  # a fresh namespace: every port is free
BUCKET, DATABASE = "saegap-records", "saegap"


def postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no /usr/lib/postgresql/*/bin/{name} (apt-get install postgresql)")
    return found[-1]


def wait_until(check: Callable[[], bool], what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Poll `check` while `process` lives (a service starting; ~60 s at most)."""
    for _ in range(300):
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise RuntimeError(f"{what} never became ready: {log.read_text()[-2000:]}")


class Services:
    """Redis (append-only, so a restart keeps the queue), PostgreSQL and SeaweedFS on the services host."""

    def __init__(self, network: Network, root: Path) -> None:
        self.network, self.root = network, root
        self.host = network.address("services")
        self.redis: subprocess.Popen[bytes] | None = None
        self.postgres: subprocess.Popen[bytes] | None = None
        self.s3: s3.S3Server | None = None
        # PostgreSQL runs as the postgres user: its directory must not be under root's private tmp dirs
        self.pg_root = Path(f"/tmp/saegap-hosts-pg-{network.token}")

    def start(self) -> None:
        self.start_redis()
        self.init_postgres()
        self.start_postgres()
        self.s3 = s3.start(self.root / "s3", ip=self.host, ports=S3_PORTS, prefix=self.network.exec_prefix("services"))
        self.s3.create_bucket(BUCKET)

    def _spawn(self, argv: list[str], log_name: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.root / log_name
        with log.open("ab") as out:
            process = subprocess.Popen([*self.network.exec_prefix("services"), *argv], stdout=out,
                                       stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        return process, log

    def start_redis(self) -> None:
        (self.root / "redis").mkdir(exist_ok=True)
        argv = ["redis-server", "--bind", "0.0.0.0", "--port", str(REDIS_PORT), "--protected-mode", "no", "--dir",
                str(self.root / "redis"), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]  # fmt: skip
        self.redis, log = self._spawn(argv, "redis.log")
        wait_until(lambda: redis.Redis(host=self.host, port=REDIS_PORT).ping(), "redis", self.redis, log)

    def restart_redis(self) -> None:
        assert self.redis is not None
        _stop(self.redis, signal.SIGTERM)  # SIGTERM: redis flushes its append-only file and exits
        self.start_redis()

    def init_postgres(self) -> None:
        data = self.pg_root / "data"
        self.pg_root.mkdir(mode=0o700)
        shutil.chown(self.pg_root, "postgres", "postgres")
        initdb = [postgres_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"]
        subprocess.run(["runuser", "-u", "postgres", "--", *initdb], check=True, capture_output=True, timeout=120)
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write("host all all 0.0.0.0/0 trust\n")

    def start_postgres(self) -> None:
        # keepalives and the idle-in-transaction timeout end the sessions of a host whose link was cut
        settings = {"listen_addresses": "*", "port": PG_PORT, "unix_socket_directories": str(self.pg_root),
                    "fsync": "off", "tcp_keepalives_idle": 2, "tcp_keepalives_interval": 1,
                    "tcp_keepalives_count": 3, "idle_in_transaction_session_timeout": "10s"}  # fmt: skip
        flags = [part for key, value in settings.items() for part in ("-c", f"{key}={value}")]
        argv = ["runuser", "-u", "postgres", "--", postgres_bin("postgres"), "-D", str(self.pg_root / "data"), *flags]
        self.postgres, log = self._spawn(argv, "postgres.log")
        wait_until(self._create_database, "postgres", self.postgres, log)

    def _create_database(self) -> bool:
        with psycopg.connect(self.admin_conninfo("postgres"), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
                conn.execute(f"CREATE DATABASE {DATABASE}")
        return True

    def stop_postgres(self) -> None:
        assert self.postgres is not None
        _stop(self.postgres, signal.SIGINT)  # SIGINT: fast shutdown, every session is cut
        self._wait_postgres_gone()

    def _wait_postgres_gone(self) -> None:
        """runuser may exit before the postmaster has finished shutting down: wait for its pid file to go."""
        pid_file = self.pg_root / "data" / "postmaster.pid"
        for _ in range(300):
            if not pid_file.exists():
                return
            time.sleep(0.1)
        raise RuntimeError("postgres did not shut down within 30 s")

    def admin_conninfo(self, database: str) -> str:
        return f"host={self.host} port={PG_PORT} user=postgres dbname={database} connect_timeout=3"

    def env(self, address: str | None = None) -> dict[str, str]:
        """The whole configuration a host gets: where the services are (address: as that host sees them)."""
        host = address or self.host
        assert self.s3 is not None
        s3_env = self.s3.env(f"s3://{BUCKET}/lake/")
        return {**s3_env, "AWS_ENDPOINT_URL": s3_env["AWS_ENDPOINT_URL"].replace(self.host, host),
                "SAEGAP_BROKER_URL": f"redis://{host}:{REDIS_PORT}/0",
                "SAEGAP_DATABASE_URL": f"postgresql+psycopg://postgres@{host}:{PG_PORT}/{DATABASE}"}  # fmt: skip

    def stop(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        for process, sig in ((self.redis, signal.SIGTERM), (self.postgres, signal.SIGINT)):
            if process is not None:
                _stop(process, sig)
        shutil.rmtree(self.pg_root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group (runuser's child too), wait, then kill it if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
