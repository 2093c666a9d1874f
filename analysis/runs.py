"""Which runs (one SAE at its hook) a job holds: layer, hook, SAE, architecture, scope, widths."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from analysis.base import SELECTED_RUNS, Scope, ScopedFilters, read


class Params(ScopedFilters):
    scope: Scope | None = None  # a job's runs of either scope


# Reads only the small `runs` relation: pickers list a job's runs without scanning records.
SQL = f"""
WITH {SELECTED_RUNS}
SELECT job_id, run_id, layer, hook_name, sae, architecture, scope, target_position, "window", d_in, d_sae
FROM selected
ORDER BY job_id, layer, hook_name, sae, run_id
"""


def runs(params: Params, store: Any = None) -> pa.Table:
    return read(SQL, params.bind(), store)
