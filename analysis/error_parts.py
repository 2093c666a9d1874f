"""Per run: which part of the SAE's error carries the gap, the part a linear map of x predicts or the rest?

Engels et al. 2024 (arXiv 2410.14670) found much of an SAE's error linearly predictable from x.
saegap fits e = SAE(x) - x ~ W x + b per run (ridge, on the fit tokens; R² on `runs`) and splices
each part alone: sae_error_linear = x + (W x + b), sae_error_nonlinear = x + (e - W x - b), each
against a random direction at its own distance (eps_random_linear, eps_random_nonlinear). For each
part the KL ratio mean(KL_part) / mean(KL_random) gets a paired sequence-bootstrap interval and
analysis.verdict's VERDICT_RULE; `carried_by` names the parts whose verdict is pathological
(docs/method.md §8). Runs without the error-part interventions have no row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis.base import SELECTED_RUNS, BootstrapSettings, Scope, ScopedFilters, empty_like, read
from analysis.layer_summary import JobBootstrap, job_bootstraps
from analysis.verdict import PATHOLOGICAL, verdicts

PARTS: tuple[str, ...] = ("linear", "nonlinear")
# intervention spliced for each part, and its random baseline at the same distance
PAIRS: dict[str, tuple[str, str]] = {part: (f"sae_error_{part}", f"eps_random_{part}") for part in PARTS}
_NAMES = ["sae", *(name for pair in PAIRS.values() for name in pair)]


class Params(BootstrapSettings, ScopedFilters):
    scope: Scope | None = None


RUNS_SQL = f"""
WITH {SELECTED_RUNS}
SELECT job_id, run_id, sae, hook_name, layer, scope, error_linear_r2 FROM selected
"""

_F, _S = pa.float64(), pa.string()


def _part_fields(part: str) -> list[tuple[str, pa.DataType]]:
    sae, base = PAIRS[part]
    ratio = [f"kl_ratio_{part}{end}" for end in ("", "_lo", "_hi")]
    return [(f"kl_{sae}", _F), (f"kl_{base}", _F), *[(n, _F) for n in ratio], (f"share_of_sae_kl_{part}", _F),
            (f"verdict_{part}", _S)]  # fmt: skip


SCHEMA = pa.schema(
    [("job_id", pa.int64()), ("run_id", pa.int64()), ("sae", _S), ("hook_name", _S), ("layer", pa.int32()),
     ("scope", _S), ("error_linear_r2", _F), ("n_sequences", pa.int64()), ("kl_sae", _F),
     *[f for part in PARTS for f in _part_fields(part)], ("carried_by", _S)]
)  # fmt: skip


def error_parts(params: Params, store: Any = None) -> pa.Table:
    bound = params.bind()
    jobs = job_bootstraps({**bound, "interventions": _NAMES}, params.n_boot, params.seed, store)
    rows = [row for job in jobs for row in _job_rows(job, params)]
    if not rows:
        return empty_like(SCHEMA)
    table = read(RUNS_SQL, bound, store).to_pandas().merge(pd.DataFrame(rows), on="run_id")
    for part in PARTS:
        table[f"verdict_{part}"] = verdicts(table[f"kl_ratio_{part}_lo"], table[f"kl_ratio_{part}_hi"])
    table["carried_by"] = [_carried_by(row) for _, row in table.iterrows()]
    table = table.sort_values(["job_id", "layer", "run_id"])
    return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _job_rows(job: JobBootstrap, params: Params) -> list[dict[str, Any]]:
    """A row per run of the job with every part and baseline, recorded in two sequences or more: the parts'
    KL means and each part's ratio to its baseline with a paired interval (layer_summary's bootstrap)."""
    column, rows = job.column, []
    for run in job.groups.run_id.unique():
        if not all((run, name) in column for name in _NAMES) or job.n_sequences[column[run, "sae"]] < 2:
            continue
        sae = column[run, "sae"]
        row: dict[str, Any] = {"run_id": run, "n_sequences": int(job.n_sequences[sae]), "kl_sae": job.point[sae]}
        for part, (part_name, base_name) in PAIRS.items():
            i, j = column[run, part_name], column[run, base_name]
            ratio, low, high = job.ratio(i, j, params.confidence)
            with np.errstate(invalid="ignore", divide="ignore"):
                share = job.point[i] / job.point[sae]
            row |= {f"kl_{part_name}": job.point[i], f"kl_{base_name}": job.point[j], f"kl_ratio_{part}": ratio,
                    f"kl_ratio_{part}_lo": low, f"kl_ratio_{part}_hi": high,
                    f"share_of_sae_kl_{part}": share}  # fmt: skip
        rows.append(row)
    return rows


def _carried_by(row: pd.Series) -> str:
    """The parts whose KL is pathologically above their random baseline: linear, nonlinear, both or neither."""
    parts = [part for part in PARTS if row[f"verdict_{part}"] == PATHOLOGICAL]
    return "both" if len(parts) == len(PARTS) else parts[0] if parts else "neither"
