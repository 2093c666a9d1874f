"""`saegap export --format saebench`: one SAEBench eval-output file per SAE, valid against the committed schema
(generated from SAEBench's own classes, docs/saebench.md), with the verdict module's numbers and null for NaN."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from analysis.saebench import BASELINE_METRICS, EVAL_TYPE_ID, SCHEMA_PATH
from analysis.verdict import BASELINES, Params, verdict
from saegap.cli import main
from tests.fixture_store import PLANTED_KL_RATIO, PLANTED_KL_RATIO_B, SAE_A, SAE_B, Fixture


@pytest.fixture
def exported(fixture_store: Fixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    monkeypatch.setenv("SAEGAP_DATA", str(fixture_store.store.config.data_dir))
    monkeypatch.delenv("SAEGAP_DATABASE_URL", raising=False)
    job = str(fixture_store.job_ids["all"])
    assert main(["export", "--format", "saebench", "--job", job, "--to", str(tmp_path / "out")]) == 0
    files = sorted((tmp_path / "out" / EVAL_TYPE_ID).glob("*_eval_results.json"))
    return {path.name: json.loads(path.read_text()) for path in files}


def test_one_valid_file_per_sae(exported: dict[str, dict]) -> None:
    saes = [SAE_A.format(layer=layer) for layer in (0, 1, 2)] + [SAE_B]
    assert sorted(exported) == sorted(f"{sae.replace('/', '_')}_eval_results.json" for sae in saes)
    schema = json.loads(SCHEMA_PATH.read_text())
    for output in exported.values():
        jsonschema.validate(output, schema)
        assert output["eval_type_id"] == EVAL_TYPE_ID and output["sae_lens_version"] == "none"
        assert set(output["eval_result_metrics"]) == {f"vs_{b}" for b in BASELINES} | {
            "kl_gap", "model_behavior_preservation", "model_performance_preservation", "reconstruction_quality",
            "shrinkage", "sparsity"}  # fmt: skip


def test_numbers_are_the_verdicts_and_nan_is_null(exported: dict[str, dict], fixture_store: Fixture) -> None:
    output = exported[f"{SAE_B.replace('/', '_')}_eval_results.json"]
    assert (output["sae_lens_release_id"], output["sae_lens_id"]) == tuple(SAE_B.split("/", 1))
    metrics = output["eval_result_metrics"]
    assert metrics["vs_eps_random"]["kl_ratio"] == pytest.approx(PLANTED_KL_RATIO_B, rel=1e-6)
    assert metrics["vs_eps_random"]["verdict"] == "pathological"
    assert metrics["vs_eps_real_diff"]["verdict"] == "no gap"  # eps_real_diff = 1.5 x eps_random
    assert metrics["kl_gap"]["z_median"] is None  # all-token run: no sigma test, NaN written as null
    rows = verdict(Params(job=fixture_store.job_ids["all"]), store=fixture_store.store).to_pandas()
    row = rows[rows.sae == SAE_B].iloc[0]
    for name, column in BASELINE_METRICS.items():
        if name != "verdict":
            assert metrics["vs_eps_cov_random"][name] == pytest.approx(row[column.format(b="eps_cov_random")])
    layer2 = exported[f"{SAE_A.format(layer=2).replace('/', '_')}_eval_results.json"]
    assert layer2["eval_result_metrics"]["vs_eps_random"]["kl_ratio"] == pytest.approx(PLANTED_KL_RATIO[2])
    assert layer2["sae_cfg_dict"]["hook_name"] == "blocks.2.hook_resid_pre"
    assert (layer2["sae_cfg_dict"]["model_name"], layer2["sae_cfg_dict"]["d_sae"]) == ("fixture-model", 64)
    assert {d["intervention"] for d in layer2["eval_result_details"]} >= {"sae", "eps_random", "zero_ablation"}


def test_saebench_format_needs_a_job(fixture_store: Fixture, tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("SAEGAP_DATA", str(fixture_store.store.config.data_dir))
    assert main(["export", "--format", "saebench", "--to", str(tmp_path)]) == 2
    assert "--format saebench needs --job N" in caplog.text
