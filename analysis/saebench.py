"""A job's verdicts in SAEBench's eval-output layout: one JSON file per SAE (run), eval type `saegap_kl_gap`.

The layout is SAEBench's BaseEvalOutput (eval_type_id, eval_config, eval_id, datetime_epoch_millis,
eval_result_metrics as flat categories, eval_result_details, sae_bench_commit_hash, sae_lens_id,
sae_lens_release_id, sae_lens_version, sae_cfg_dict). The classes that define it and the committed
JSON Schema (SCHEMA_PATH) are in scripts/saebench/ and docs/saebench/; docs/saebench.md says how
they were checked against SAEBench's own classes. NaN and infinities are written as null.
Files go to DIR/saegap_kl_gap/<release>_<sae_id>_eval_results.json, as SAEBench names its results.
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.verdict import BASELINES, VERDICT_RULE
from analysis.verdict import Params as VerdictParams

EVAL_TYPE_ID = "saegap_kl_gap"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "docs" / "saebench" / f"eval_output_schema_{EVAL_TYPE_ID}.json"
NOT_SAE_BENCH = "none (exported by saegap; SAE Bench did not run this eval)"  # sae_bench_commit_hash is required

# SAELens core metric categories, as SAEBench's `core` eval names them: category -> analysis.sae_metrics columns.
CORE_CATEGORIES = {
    "model_behavior_preservation": ("kl_div_score", "kl_div_with_ablation", "kl_div_with_sae"),
    "model_performance_preservation": ("ce_loss_score", "ce_loss_with_ablation", "ce_loss_with_sae",
                                       "ce_loss_without_sae"),
    "reconstruction_quality": ("mse", "cossim"),
    "shrinkage": ("l2_ratio",),
    "sparsity": ("l0", "l1"),
}  # fmt: skip
# kl_gap category: output name -> analysis.verdict column
GAP_METRICS = {"kl_sae": "kl_sae", "ce_loss_increase_sae": "loss_delta_sae",
               "frac_tokens_sae_above_eps_random": "frac_tokens_sae_above_eps_random", "z_median": "z_median",
               "z_p90": "z_p90", "frac_z_above_2": "frac_z_above_2", "n_tokens": "n_tokens",
               "n_sequences": "n_sequences"}  # fmt: skip
# per-baseline category: output name -> analysis.verdict column, {b} the baseline
BASELINE_METRICS = {"kl_baseline": "kl_{b}", "kl_ratio": "kl_ratio_{b}", "kl_ratio_ci_lower": "kl_ratio_{b}_lo",
                    "kl_ratio_ci_upper": "kl_ratio_{b}_hi", "ce_ratio": "ce_ratio_{b}",
                    "ce_ratio_ci_lower": "ce_ratio_{b}_lo", "ce_ratio_ci_upper": "ce_ratio_{b}_hi",
                    "verdict": "verdict_{b}"}  # fmt: skip
# eval_result_details: output name -> analysis.layer_summary column
DETAIL_COLUMNS = {"intervention": "intervention", "kl_mean": "kl_mean", "kl_mean_ci_lower": "kl_mean_lo",
                  "kl_mean_ci_upper": "kl_mean_hi", "kl_median": "kl_median", "kl_p999": "kl_p999",
                  "ce_loss_increase_mean": "loss_delta_mean", "n_tokens": "n_tokens"}  # fmt: skip


def plain(value: Any) -> Any:
    """A JSON value: numpy scalars as Python ones, NaN/inf/NA as null."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pick(row: pd.Series | dict, names: dict[str, str]) -> dict[str, Any]:
    return {out: plain(row.get(column)) for out, column in names.items()}


def _metrics(verdict: pd.Series, core: dict[str, Any]) -> dict[str, dict[str, Any]]:
    categories = {"kl_gap": _pick(verdict, GAP_METRICS)}
    for baseline in BASELINES:
        names = {out: column.format(b=baseline) for out, column in BASELINE_METRICS.items()}
        categories[f"vs_{baseline}"] = _pick(verdict, names)
    for category, columns in CORE_CATEGORIES.items():
        categories[category] = {column: plain(core.get(column)) for column in columns}
    return categories


def _config(spec: Any, params: VerdictParams) -> dict[str, Any]:
    scope = spec.scope
    return {
        "model_name": spec.model, "dataset": spec.tokens or "SAE's dataset",  # None: the SAE's own
        "n_sequences": spec.n_sequences, "scope": scope.kind,
        "include_special_tokens": getattr(scope, "include_special_tokens", None),
        "target_position": getattr(scope, "position", None), "window": getattr(scope, "window", None),
        "interventions": list(spec.interventions), "samples": spec.samples, "seed": spec.seed, "dtype": spec.dtype,
        "n_boot": params.n_boot, "confidence": params.confidence, "bootstrap_seed": params.seed,
        "verdict_rule": VERDICT_RULE,
    }  # fmt: skip


def sae_lens_ids(sae: str) -> tuple[str | None, str | None]:
    """(release, sae_id) of a 'release/sae_id' name; (None, None) for a local SAE directory."""
    if sae.startswith(("/", ".", "~")) or "/" not in sae:
        return None, None
    release, sae_id = sae.split("/", 1)
    return release, sae_id


def _sae_cfg(run: pd.Series, model: str) -> dict[str, Any]:
    """What the store knows of the SAE's config, under SAELens's config names."""
    names = {"hook_name": "hook_name", "hook_layer": "layer", "d_in": "d_in", "d_sae": "d_sae",
             "architecture": "architecture"}  # fmt: skip
    return {"model_name": model, **_pick(run, names)}


def eval_outputs(job_id: int, store: Any = None, params: VerdictParams | None = None) -> list[dict[str, Any]]:
    """One SAEBench eval-output dict per run of the job (runs with too few sequences for a CI left out)."""
    from analysis.registry import MODULES

    params = (params or VerdictParams()).model_copy(update={"job": job_id})
    job = store.get_job(job_id)
    verdicts = MODULES["verdict"](params, store=store).to_pandas()
    core = MODULES["sae_metrics"](MODULES["sae_metrics"].params(job=job_id, scope=None), store=store).to_pandas()
    runs = MODULES["runs"](MODULES["runs"].params(job=job_id), store=store).to_pandas().set_index("run_id")
    details = MODULES["layer_summary"](MODULES["layer_summary"].params(job=job_id, scope=None), store=store)
    details = details.to_pandas()
    stamp = int((job.finished_at or job.created_at).timestamp() * 1000)
    outputs = []
    for _, verdict in verdicts.iterrows():
        run = runs.loc[verdict.run_id]
        core_row = core[core.run_id == verdict.run_id]
        release, sae_id = sae_lens_ids(verdict.sae)
        outputs.append({
            "eval_type_id": EVAL_TYPE_ID,
            "eval_config": _config(job.spec, params),
            "eval_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"saegap:job{job_id}:run{verdict.run_id}:{params}")),
            "datetime_epoch_millis": stamp,
            "eval_result_metrics": _metrics(verdict, core_row.iloc[0].to_dict() if len(core_row) else {}),
            "eval_result_details": [_pick(r, DETAIL_COLUMNS) for _, r in
                                    details[details.run_id == verdict.run_id].iterrows()],
            "sae_bench_commit_hash": NOT_SAE_BENCH,
            "sae_lens_id": sae_id, "sae_lens_release_id": release,
            "sae_lens_version": job.versions.get("sae_lens"),
            "sae_cfg_dict": _sae_cfg(run, job.spec.model),
            "eval_result_unstructured": {"saegap_job_id": job_id, "saegap_run_id": int(verdict.run_id),
                                         "saegap_versions": job.versions},
        })  # fmt: skip
    return outputs


def file_name(output: dict[str, Any]) -> str:
    """SAEBench's result name, '<release>_<sae_id>_eval_results.json' ('/' in an id becomes '_')."""
    release = output["sae_lens_release_id"] or "local"
    sae_id = output["sae_lens_id"] or f"run{output['eval_result_unstructured']['saegap_run_id']}"
    return f"{release}_{sae_id}_eval_results.json".replace("/", "_")


def write_job(job_id: int, directory: Path, store: Any = None) -> list[Path]:
    """Write the job's eval outputs under directory/saegap_kl_gap/; the paths written."""
    if store is None:
        from schema.read import default_store

        store = default_store()
    outputs = eval_outputs(job_id, store)
    if not outputs:
        raise ValueError(f"job {job_id} has no run with records of at least 2 sequences: nothing to export")
    target = Path(directory) / EVAL_TYPE_ID
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for output in outputs:
        path = target / file_name(output)
        path.write_text(json.dumps(output, indent=2, allow_nan=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths
