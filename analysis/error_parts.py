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
from analysis.bootstrap import bootstrap_means, percentile_interval
from analysis.layer_summary import PER_SEQUENCE_SQL
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
    per_sequence = read(PER_SEQUENCE_SQL, {**bound, "interventions": _NAMES}, store).to_pandas()
    rows = [_run_row(run, frame, params) for run, frame in per_sequence.groupby("run_id")]
    rows = [row for row in rows if row is not None]
    if not rows:
        return empty_like(SCHEMA)
    table = read(RUNS_SQL, bound, store).to_pandas().merge(pd.DataFrame(rows), on="run_id")
    for part in PARTS:
        table[f"verdict_{part}"] = verdicts(table[f"kl_ratio_{part}_lo"], table[f"kl_ratio_{part}_hi"])
    table["carried_by"] = [_carried_by(row) for _, row in table.iterrows()]
    table = table.sort_values(["job_id", "layer", "run_id"])
    return pa.Table.from_pandas(table[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def _run_row(run: int, rows: pd.DataFrame, params: Params) -> dict[str, Any] | None:
    """KL means of the run's parts and baselines, and each part's ratio with a paired bootstrap interval."""
    if not set(_NAMES) <= set(rows.intervention):
        return None
    sequences = np.unique(rows.sequence.to_numpy(), return_inverse=True)[1]
    if sequences.max() < 1:
        return None  # one sequence: no interval
    sums, counts = np.zeros((sequences.max() + 1, len(_NAMES))), np.zeros((sequences.max() + 1, len(_NAMES)))
    column = rows.intervention.map({name: k for k, name in enumerate(_NAMES)}).to_numpy()
    sums[sequences, column] = rows.kl_sum.to_numpy(np.float64)
    counts[sequences, column] = rows.kl_count.to_numpy(np.float64)
    point = sums.sum(0) / counts.sum(0)
    replicates = bootstrap_means(sums, counts, params.n_boot, params.seed)  # (B, 5), paired across columns
    row: dict[str, Any] = {"run_id": run, "n_sequences": int(sequences.max() + 1), "kl_sae": point[0]}
    for part, (sae, base) in PAIRS.items():
        i, j = _NAMES.index(sae), _NAMES.index(base)
        with np.errstate(invalid="ignore", divide="ignore"):
            low, high = percentile_interval((replicates[:, i] / replicates[:, j])[:, None], params.confidence)
            row |= {f"kl_{sae}": point[i], f"kl_{base}": point[j], f"kl_ratio_{part}": point[i] / point[j],
                    f"kl_ratio_{part}_lo": low[0], f"kl_ratio_{part}_hi": high[0],
                    f"share_of_sae_kl_{part}": point[i] / point[0]}  # fmt: skip
    return row


def _carried_by(row: pd.Series) -> str:
    """The parts whose KL is pathologically above their random baseline: linear, nonlinear, both or neither."""
    parts = [part for part in PARTS if row[f"verdict_{part}"] == PATHOLOGICAL]
    return "both" if len(parts) == len(PARTS) else parts[0] if parts else "neither"
