"""The worker's commands through `saegap.cli.main`: spec flags and files, errors naming the field, output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from saegap.cli import main
from saegap.evaluate_command import DEFAULT_SEQUENCES
from schema.config import StoreConfig
from schema.store import Store

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)
    monkeypatch.delenv("SAEGAP_DATABASE_URL", raising=False)
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "store"))
    return tmp_path / "store"


def tiny_flags(assets: dict[str, str]) -> list[str]:
    return ["--model", assets["model"], "--sae", assets["blocks.2.hook_resid_pre"], "--tokens", assets["tokens"],
            "--device", "cpu", "--interventions", "sae,eps_random,zero_ablation"]  # fmt: skip


def job_count(data_dir: Path) -> int:
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        return len(store.list_jobs())


def test_evaluate_prints_table_and_where_records_are(
    tiny_assets: dict[str, str], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["evaluate", *tiny_flags(tiny_assets), "--n-sequences", "6", "--sequences-per-shard", "2", "--wide"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("job 1: mean KL")  # --wide: every intervention's table first
    header, row = lines[1].split(), lines[2].split()
    assert header[:5] == ["layer", "hook_name", "tokens", "KL", "sae"]
    assert row[:3] == ["2", "blocks.2.hook_resid_pre", str(6 * 23)]  # 6 sequences x 23 non-BOS positions
    assert "KL zero_ablation" in lines[1] and "sae/eps_random [95% CI]" in lines[1]
    assert lines[3].startswith(f"records: job 1 in {data_dir.resolve()}")
    assert lines[4].startswith('example: saegap sql "SELECT') and "job_id = 1" in lines[5]
    assert lines[7].startswith("job 1: are the SAE's errors pathological?")  # the verdict ends the output
    assert lines[8].split()[:3] == ["layer", "SAE", "KL"] and lines[-1].endswith(".")


def test_status_jobs_cancel(tiny_assets: dict[str, str], data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", *tiny_flags(tiny_assets), "--n-sequences", "2"]) == 0
    capsys.readouterr()
    assert main(["status", "1"]) == 0
    status = capsys.readouterr().out.splitlines()
    assert status[0] == "job 1: done" and status[2] == "shards 1/1; tokens 48"
    assert main(["jobs"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[1].split()[:4] == ["1", "done", "1/1", "48"]
    assert main(["cancel", "1"]) == 0  # a finished job stays as it was
    assert capsys.readouterr().out.strip() == "job 1: done"
    assert main(["status", "7"]) == 1
    assert "unknown job id 7" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("spec_text", "flags", "message"),
    [
        ("model: demo\nsamplez: 3\n", [], "invalid job spec: samplez: Extra inputs are not permitted"),
        ("dtype: float64\n", [], "invalid job spec: dtype: Input should be"),
        ("{}", ["--samples", "-1"], "invalid job spec: samples: Input should be greater than or equal to 1"),
        ("{}", ["--interventions", "sae,eps_randum"], "invalid job spec: interventions.1: Input should be"),
        ("{}", ["--scope", "single_token"], "invalid job spec: scope.single_token.position: Field required"),
        ("- a list\n", [], "must hold a mapping of JobSpec fields"),
        ("model: [unclosed\n", [], "is not valid YAML"),
    ],
)
def test_malformed_spec_names_the_field_and_creates_no_job(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], spec_text: str, flags: list[str], message: str
) -> None:
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(spec_text)
    for command in ("evaluate", "submit"):
        assert main([command, "--spec", str(spec_file), *flags]) == 2
        assert message in capsys.readouterr().err
    assert job_count(data_dir) == 0


def test_missing_spec_file(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--spec", "/nonexistent/job.yaml"]) == 2
    assert "spec file /nonexistent/job.yaml does not exist" in capsys.readouterr().err
    assert job_count(data_dir) == 0


def test_missing_token_file_fails_the_job_with_its_message(
    tiny_assets: dict[str, str], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = [*tiny_flags(tiny_assets), "--tokens", "/nonexistent/tokens.npy"]
    assert main(["evaluate", *flags]) == 1
    assert "job 1 failed: unknown token set '/nonexistent/tokens.npy'" in capsys.readouterr().err


def test_flags_override_the_spec_file(tmp_path: Path) -> None:
    from worker.commands import spec_args

    spec_file = tmp_path / "job.json"
    spec_file.write_text(json.dumps({"model": "m", "samples": 4, "seed": 3, "scope": {"kind": "single_token",
                                                                                      "position": 5}}))  # fmt: skip
    parser = __import__("argparse").ArgumentParser()
    spec_args.configure(parser)
    args = parser.parse_args(["--spec", str(spec_file), "--samples", "2", "--window", "3", "--sae", "a", "--sae", "b"])
    spec = spec_args.spec_from_args(args, defaults={"n_sequences": 9})
    assert (spec.model, spec.samples, spec.seed, spec.saes, spec.n_sequences) == ("m", 2, 3, ["a", "b"], 9)
    assert (spec.scope.kind, spec.scope.position, spec.scope.window) == ("single_token", 5, 3)
    args = parser.parse_args(["--spec", str(spec_file), "--scope", "all_tokens"])
    assert spec_args.spec_from_args(args).scope.kind == "all_tokens"


def _demo_assets_missing() -> str | None:
    """Why the bundled demo cannot run yet (registry or the files it names absent), else None."""
    models = REPO / "models"
    registry = models / "registry.json"
    if not registry.exists():
        return "models/registry.json is absent (demo model not committed yet)"
    entries = json.loads(registry.read_text())
    needed = [
        models / entries["models"]["demo"]["path"] / "model.safetensors",
        models / entries["token_sets"]["demo"]["path"],
    ]
    needed += [
        models / entries["releases"]["demo-res"]["path"] / sae / "cfg.json"
        for sae in entries["releases"]["demo-res"]["saes"]
    ]
    missing = [str(path.relative_to(REPO)) for path in needed if not path.exists()]
    return f"demo model files absent: {', '.join(missing)}" if missing else None


@pytest.mark.skipif(_demo_assets_missing() is not None, reason=str(_demo_assets_missing()))
def test_evaluate_without_arguments_runs_the_demo(tmp_path: Path) -> None:
    """`saegap evaluate` as the README runs it, on fewer sequences than the default to stay quick."""
    env = {**os.environ, "SAEGAP_DATA": str(tmp_path / "store"), "HF_HUB_OFFLINE": "1"}
    env.pop("SAEGAP_BROKER_URL", None)
    result = subprocess.run([sys.executable, "-m", "saegap.cli", "evaluate", "--n-sequences", "8"],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    layers = json.loads((REPO / "models" / "registry.json").read_text())["releases"]["demo-res"]["saes"]
    assert lines[0].startswith("records: job 1 in") and lines[4].startswith("job 1: are the SAE's errors")
    assert lines[5].split()[:3] == ["layer", "SAE", "KL"]
    table = lines[6 : 6 + len(layers)]
    assert [row.split()[0] for row in table] == [str(i) for i in range(len(layers))]
    assert all(row.count("[") == 2 for row in table)  # ratios to eps_random and eps_cov_random with their CIs
    assert max(map(len, lines[4:])) <= 100  # the answer fits 100 columns
    assert "INFO" not in result.stderr  # library log lines go to the data dir's saegap.log
    assert DEFAULT_SEQUENCES == 256
