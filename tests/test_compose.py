"""docker-compose.yml parses and names the services docs/deploy.md describes (Debian's docker-compose 1.29)."""

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
    assert set(resolved["services"]) == {"redis", "postgres", "worker", "ui"}
    worker = resolved["services"]["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "container_name" not in worker  # --scale worker=N needs unnamed containers
    assert worker["environment"]["SAEGAP_BROKER_URL"] == "redis://redis:6379/0"
    assert "8501" in str(resolved["services"]["ui"]["ports"])
