"""docker-compose.yml parses and names the services docs/deploy.md describes (Debian's docker-compose 1.29),
including the S3 server the records go to."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not on PATH (apt-get install docker-compose)"
)
def test_compose_config_is_valid() -> None:
    result = subprocess.run(["docker-compose", "-f", "docker-compose.yml", "config"], cwd=REPO, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {"redis", "postgres", "s3", "worker", "ui"}
    worker = resolved["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "container_name" not in worker  # --scale worker=N needs unnamed containers
    assert worker["environment"]["SAEGAP_BROKER_URL"] == "redis://redis:6379/0"
    # records on the compose S3 server, signed with the identity it was started with
    assert worker["environment"]["SAEGAP_DATA_PATH"].startswith("s3://saegap-records/")
    assert worker["environment"]["AWS_ENDPOINT_URL"] == "http://s3:8333"
    s3 = resolved["services"]["s3"]
    assert s3["environment"]["AWS_SECRET_ACCESS_KEY"] == worker["environment"]["AWS_SECRET_ACCESS_KEY"]
    assert "-bucket=saegap-records" in s3["command"] and set(worker["depends_on"]) >= {"redis", "postgres", "s3"}
    assert "8501" in str(resolved["services"]["ui"]["ports"])
