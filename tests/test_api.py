"""saegap.evaluate, the Python API: in-memory objects give the CLI's records exactly; bad input writes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

import saegap
from saegap.cli import main
from schema.config import StoreConfig
from schema.read import query
from schema.store import Store
from schema.tables import TokenSetEntry
from tests.worker.conftest import save_tiny_assets, tiny_sae
from worker import loading
from worker.errors import BadInput

HOOK = "blocks.1.hook_resid_pre"
REPO = Path(__file__).resolve().parents[1]
# Every record column but the ids (run ids and job ids differ between two stores).
RECORDS_SQL = """
SELECT r.layer, r.hook_name, i.sequence, i.position, i.intervention, i.sample, i.kl, i.loss
FROM interventions i JOIN runs r USING (run_id) ORDER BY ALL
"""
TOKENS_SQL = "SELECT * EXCLUDE (run_id, shard_id) FROM tokens ORDER BY sequence, position"


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return save_tiny_assets(tmp_path_factory.mktemp("api-assets"), n_sequences=6)


def fresh_sae(assets: dict[str, str], d_in: int = 32, hook: str = HOOK):
    sae = tiny_sae(hook, d_in, seed=11)
    sae.cfg.metadata.model_name = assets["model"]
    return sae


def records(data_dir: Path) -> tuple[list[dict], list[dict]]:
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        return query(RECORDS_SQL, store=store).to_pylist(), query(TOKENS_SQL, store=store).to_pylist()


def test_in_memory_model_sae_and_tokens_equal_the_cli_on_the_same_files(
    assets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sae = fresh_sae(assets)
    sae.save_model(tmp_path / "sae-on-disk")
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "cli"))
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)
    flags = ["--model", assets["model"], "--sae", str(tmp_path / "sae-on-disk"), "--tokens", assets["tokens"]]
    assert main(["evaluate", *flags, "--device", "cpu"]) == 0

    model = loading.load_model(assets["model"], "cpu", "float32", {})
    tokens = np.load(assets["tokens"])
    results = saegap.evaluate(model, [sae], tokens=tokens, data_dir=tmp_path / "api", device="cpu")

    cli_records, cli_tokens = records(tmp_path / "cli")
    api_records, api_tokens = records(tmp_path / "api")
    assert len(cli_records) > 6 * 20 * 10 and api_records == cli_records  # 10 interventions, bit for bit
    assert api_tokens == cli_tokens
    assert results.data_dir == tmp_path / "api" and results.job_id == 1


def test_results_read_the_job(assets: dict[str, str], tmp_path: Path) -> None:
    results = saegap.evaluate(assets["model"], fresh_sae(assets), tokens=assets["tokens"], device="cpu", samples=2)
    summary = results.layer_summary()
    assert set(summary.intervention) == set(results.sql("SELECT DISTINCT intervention FROM interventions").intervention)
    assert list(summary.layer.unique()) == [1]
    counts = results.sql("SELECT count(*) AS n FROM interventions WHERE sample = 1")
    assert counts.n[0] > 0  # samples=2 reached the job
    assert results.report("layer_summary", n_boot=200).shape[0] == summary.shape[0]
    page = results.html(tmp_path / "report.html")
    assert page.read_text().startswith("<!DOCTYPE html>") and f"job {results.job_id}" in page.read_text()
    assert results.data_dir.name.startswith("saegap-")  # a fresh temporary store


@pytest.mark.parametrize(
    ("sae_args", "message"),
    [
        ({"d_in": 16}, "SAE d_in=16 but blocks.1.hook_resid_pre has width 32"),
        ({"hook": "blocks.7.hook_resid_pre"}, "blocks.7.hook_resid_pre"),
    ],
)
def test_an_sae_that_does_not_fit_is_one_error_and_writes_nothing(
    assets: dict[str, str], tmp_path: Path, sae_args: dict, message: str
) -> None:
    with pytest.raises(BadInput, match=message.replace(".", r"\.")):
        saegap.evaluate(assets["model"], [fresh_sae(assets, **sae_args)], tokens=assets["tokens"], data_dir=tmp_path)
    with Store.open(StoreConfig(data_dir=tmp_path)) as store:
        assert store.list_jobs() == []
    assert not any((tmp_path / "inputs").glob("*")), "the in-memory SAE's files were left behind"


def test_a_bad_job_field_names_it(assets: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="samples"):
        saegap.evaluate(assets["model"], fresh_sae(assets), tokens=assets["tokens"], data_dir=tmp_path, samples=0)
    assert not any((tmp_path / "inputs").glob("*"))


def test_import_saegap_loads_no_model_library() -> None:
    heavy = "{'torch', 'transformer_lens', 'sae_lens'}"
    code = f"import sys, saegap; saegap.evaluate; print(sorted({heavy} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


def test_the_notebook_example_runs(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SAEGAP_BROKER_URL"} | {"HF_HUB_OFFLINE": "1"}
    example = REPO / "docs" / "notebook_example.py"
    result = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "layer" in result.stdout and "eps_random" in result.stdout


@pytest.mark.parametrize("in_memory", [False, True], ids=["sae-dir", "in-memory-sae"])
def test_text_is_cached_in_data_dirs_store_not_saegap_datas(
    assets: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_memory: bool
) -> None:
    """The token cache and its token_sets row follow data_dir; SAEGAP_DATA (another store) gets nothing, and a
    configured broker (here one that cannot be reached) is not used: the job runs in this process."""
    elsewhere, data_dir = tmp_path / "elsewhere", tmp_path / "mine"
    monkeypatch.setenv("SAEGAP_DATA", str(elsewhere))
    monkeypatch.setenv("SAEGAP_BROKER_URL", "redis://127.0.0.1:9/0")
    for name in ("SAEGAP_TOKEN_CACHE", "SAEGAP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    text = tmp_path / "text.jsonl"
    text.write_text("".join(json.dumps({"text": f"t{1 + i % 63}"}) + "\n" for i in range(100)))
    sae = fresh_sae(assets) if in_memory else assets[HOOK]
    results = saegap.evaluate(
        assets["model"], [sae], tokens=str(text), data_dir=data_dir, device="cpu", n_sequences=2,
        interventions=["sae", "eps_random"],
    )  # fmt: skip
    cached = sorted(path.name for path in (data_dir / "token_sets").iterdir())
    assert len(cached) == 2 and {Path(name).suffix for name in cached} == {".npy", ".json"}
    with Store.open(StoreConfig(data_dir=data_dir)) as store, Session(store.engine) as session:
        (row,) = session.scalars(select(TokenSetEntry)).all()
    assert row.source == str(text) and f"{row.name}.npy" in cached and row.meta["shape"] == [2, 24]
    assert results.warnings == []  # text read by the model's own tokenizer
    assert not elsewhere.exists(), sorted(str(p) for p in elsewhere.rglob("*"))
