"""`saegap evaluate` as a user sees it: the verdict last, within 100 columns, no library log lines on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.worker.test_cli import tiny_flags

WIDTH = 100


def _evaluate(tmp_path: Path, assets: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAEGAP_DATA": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"}
    for name in ("SAEGAP_BROKER_URL", "SAEGAP_DATABASE_URL", "SAEGAP_DATA_PATH"):
        env.pop(name, None)
    argv = [sys.executable, "-m", "saegap.cli", *extra, "evaluate", *tiny_flags(assets), "--n-sequences", "4",
            "--sequences-per-shard", "2"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)


def test_default_output_is_the_verdict_and_logs_go_to_the_data_dir(tmp_path: Path, tiny_assets: dict[str, str]) -> None:
    result = _evaluate(tmp_path, tiny_assets)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("job 1: are the SAE's errors pathological?"))
    answer = lines[start:]
    assert answer[1].split()[:3] == ["layer", "SAE", "KL"] and "vs eps_random [CI]" in answer[1]
    row = answer[2].split()
    assert row[0] == "2" and row[3].startswith("[") and row[-1] == "-"  # no eps_cov_random in this job
    assert answer[-1].endswith(".") and "eps_random (" in " ".join(answer[4:])  # one sentence per SAE
    assert max(map(len, answer)) <= WIDTH
    assert lines[0].startswith("records: job 1 in")  # the records' place first, the verdict last
    assert "INFO" not in result.stderr  # alembic and worker INFO lines are not on the terminal ...
    log = (tmp_path / "store" / "saegap.log").read_text()
    assert "INFO worker." in log and "INFO alembic" in log  # ... but in the data dir's log


def test_verbose_puts_the_log_on_the_terminal(tmp_path: Path, tiny_assets: dict[str, str]) -> None:
    result = _evaluate(tmp_path, tiny_assets, "-v")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "INFO worker." in result.stderr and not (tmp_path / "store" / "saegap.log").exists()
