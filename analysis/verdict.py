"""Per run: are the SAE's errors pathological? Its KL and CE increase over each random baseline's, with verdicts.

For each baseline B of BASELINES the ratios are mean(KL_sae) / mean(KL_B) and
mean(loss_delta_sae) / mean(loss_delta_B) over the run's records (every sample of a random
baseline counts towards its mean, as in layer_summary), each with a paired sequence-bootstrap
interval: every replicate re-weights whole sequences, the same weights for the SAE and the
baseline (analysis.bootstrap). The bootstrap is layer_summary's own (analysis.layer_summary
.job_bootstraps, the same seed), so the interval of the ratio to eps_random is layer_summary's
kl_ratio_lo/hi.

The verdict against B reads the KL ratio's interval (VERDICT_RULE): `pathological` when its
lower bound is above 1, `better than baseline` when its upper bound is below 1, `no gap` when
it contains 1; NULL when the run has no records of B. `frac_tokens_sae_above_eps_random` is the
share of intervened tokens whose SAE KL exceeds the sample-0 eps_random KL. For single-token runs
with enough draws (analysis.sigma), z_median, z_p90 and frac_z_above_2 summarise the sigma
test's z per token; NULL for runs without.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.base import SELECTED_RUNS, BootstrapSettings, Scope, ScopedFilters, empty_like, read
from analysis.layer_summary import JobBootstrap, job_bootstraps
from analysis.sigma import Params as SigmaParams
from analysis.sigma import sigma
from schema.spec import RANDOM_BASELINES

BASELINES: tuple[str, ...] = RANDOM_BASELINES  # compared with the SAE, most natural first (docs/method.md §2.1)
PATHOLOGICAL, NO_GAP, BETTER = "pathological", "no gap", "better than baseline"
VERDICT_RULE = "pathological: CI lower bound > 1; better than baseline: CI upper bound < 1; no gap: CI contains 1"
Z_THRESHOLD = 2.0
_Z_COLUMNS = ("z_median", "z_p90", "frac_z_above_2")


class Params(BootstrapSettings, ScopedFilters):
    scope: Scope | None = None  # a verdict per run, either scope


RUNS_SQL = f"""
WITH {SELECTED_RUNS}
SELECT job_id, run_id, sae, hook_name, hook_point, layer, scope FROM selected
"""

# Share of intervened tokens where the SAE's KL exceeds eps_random's (sample 0), per run: from the
# store's gap_signs rollup (one row per run and shard), exact.
ABOVE_SQL = f"""
WITH {SELECTED_RUNS}
SELECT run_id, sum(n)::BIGINT AS n_tokens, sum(n_sae_above) / sum(n) AS frac_tokens_sae_above_eps_random
FROM gap_signs JOIN selected USING (run_id)
GROUP BY run_id
HAVING sum(n) > 0
"""

_F, _S = pa.float64(), pa.string()


def _baseline_fields(baseline: str) -> list[tuple[str, pa.DataType]]:
    """The baseline's mean KL, its KL and CE ratios with their intervals, and the verdict."""
    ratios = [f"{metric}_ratio_{baseline}{end}" for metric in ("kl", "ce") for end in ("", "_lo", "_hi")]
    return [(f"kl_{baseline}", _F), *[(name, _F) for name in ratios], (f"verdict_{baseline}", _S)]


_RATIO_FIELDS = [field for baseline in BASELINES for field in _baseline_fields(baseline)]
SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("sae", _S), ("hook_name", _S), ("hook_point", _S),
     ("layer", pa.int32()), ("scope", _S), ("n_tokens", pa.int64()), ("n_sequences", pa.int64()),
     ("kl_sae", _F), ("loss_delta_sae", _F), *_RATIO_FIELDS, ("frac_tokens_sae_above_eps_random", _F),
     ("z_median", _F), ("z_p90", _F), ("frac_z_above_2", _F)]
)  # fmt: skip


def verdict(params: Params, store: Any = None) -> pa.Table:
    bound = params.bind()
    # the SAE and its baselines only: the resampling weights depend on the sequences alone, so these columns'
    # replicates equal layer_summary's, at a third of the rows and product
    jobs = job_bootstraps({**bound, "interventions": ["sae", *BASELINES]}, params.n_boot, params.seed, store)
    frames = [_ratios_of_job(job, params) for job in jobs]
    frames = [frame for frame in frames if len(frame)]
    if not frames:  # no records, or no run with two sequences
        return empty_like(SCHEMA)
    table = read(RUNS_SQL, bound, store).to_pandas().merge(pd.concat(frames), on="run_id")
    table = table.merge(read(ABOVE_SQL, bound, store).to_pandas(), on="run_id", how="left")
    table = table.merge(_sigma_summary(params, store, (table.scope == "single_token").any()), on="run_id", how="left")
    for baseline in BASELINES:
        table[f"verdict_{baseline}"] = verdicts(table[f"kl_ratio_{baseline}_lo"], table[f"kl_ratio_{baseline}_hi"])
    table = table.sort_values(["job_id", "layer", "run_id"])
    return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def verdicts(low: pd.Series, high: pd.Series) -> list[str | None]:
    """VERDICT_RULE per interval; None where the interval is unknown (no such baseline)."""
    return [
        None if not (np.isfinite(lo) and np.isfinite(hi)) else PATHOLOGICAL if lo > 1 else BETTER if hi < 1 else NO_GAP
        for lo, hi in zip(low, high, strict=True)
    ]


def _ratios_of_job(job: JobBootstrap, params: Params) -> pd.DataFrame:
    """SAE-over-baseline ratios and their paired intervals for every run of one job (layer_summary's bootstrap)."""
    column, n_sequences = job.column, job.n_sequences
    runs = [
        run for run in job.groups.run_id.unique() if (run, "sae") in column and n_sequences[column[run, "sae"]] >= 2
    ]
    rows = [_run_ratios(run, job, params) for run in runs]
    return pd.DataFrame(rows).assign(n_sequences=[int(n_sequences[column[run, "sae"]]) for run in runs])


def _run_ratios(run: int, job: JobBootstrap, params: Params) -> dict[str, Any]:
    """One run's row: SAE means and, per baseline, the KL and CE ratios with their intervals."""
    n_groups, sae = len(job.groups), job.column[run, "sae"]
    row: dict[str, Any] = {"run_id": run, "kl_sae": job.point[sae], "loss_delta_sae": job.point[n_groups + sae]}
    for baseline in BASELINES:
        base = job.column.get((run, baseline))
        for metric, offset in (("kl", 0), ("ce", n_groups)):
            names = [f"{metric}_ratio_{baseline}{s}" for s in ("", "_lo", "_hi")]
            ratio = (np.nan,) * 3 if base is None else job.ratio(offset + sae, offset + base, params.confidence)
            row.update(zip(names, ratio, strict=True))
        row[f"kl_{baseline}"] = np.nan if base is None else job.point[base]
    return row


def _sigma_summary(params: Params, store: Any, any_single_token: bool) -> pd.DataFrame:
    """Median and 90th percentile of the sigma test's z per single-token run, and the share of tokens with z > 2
    (all-token runs are not tested: the sigma test's scan of every draw is skipped)."""
    filters = {"job": params.job, "run": params.run, "layer": params.layer, "scope": "single_token"}
    z = pd.DataFrame({"run_id": [], "z": []})
    if any_single_token:
        z = sigma(SigmaParams(**filters), store=store).to_pandas()[["run_id", "z"]].dropna()
    if z.empty:
        return pd.DataFrame({"run_id": pd.Series(dtype="int64"), **{c: pd.Series(dtype="float64") for c in _Z_COLUMNS}})
    grouped = z.groupby("run_id").z
    return pd.DataFrame({
        "z_median": grouped.median(), "z_p90": grouped.quantile(0.9),
        "frac_z_above_2": grouped.apply(lambda values: float((values > Z_THRESHOLD).mean())),
    }).reset_index()  # fmt: skip
