"""Time each UI page's data (the analysis queries it runs on first load) on the store benchmark's records.

Build the records first with bench/store.py (default .work/bench-store); target: every page <= 3 s.
Usage: .venv/bin/python bench/ui.py [--data-dir .work/bench-store] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from analysis.registry import get_module
from schema.config import StoreConfig
from schema.read import query
from schema.store import Store
from ui.data import HEATMAP_TOKENS

log = logging.getLogger("bench.ui")

# (module, params) each page asks for on first load, as in ui/views/*.py; {job}/{run}/{other} filled in.
PAGE_QUERIES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "layer_summary": [("layer_summary", {"job": "{job}"}), ("compare_saes", {"job": "{job}"})],
    "distributions": [
        ("kl_histogram", {"job": "{job}", "interventions": ["sae", "eps_random", "zero_ablation"]}),
        ("loss_histogram", {"job": "{job}", "interventions": ["sae", "eps_random", "zero_ablation"]}),
        ("by_position", {"job": "{job}", "interventions": ["sae", "eps_random", "zero_ablation"]}),
    ],
    "correlations": [
        ("runs", {"job": "{job}"}),
        ("token_sample", {"job": "{job}", "run": "{run}", "x": "position", "y": "kl_gap", "other_run": "{other}"}),
        ("cross_layer", {"job": "{job}", "max_tokens": HEATMAP_TOKENS}),
    ],
    "tokens": [("top_tokens", {"job": "{job}"}), ("token_contexts", {"job": "{job}", "run": "{run}", "limit": 100})],
}


def _fill(params: dict[str, Any], ids: dict[str, int]) -> dict[str, Any]:
    return {key: ids[value[1:-1]] if isinstance(value, str) and value.startswith("{") else value
            for key, value in params.items()}  # fmt: skip


def _ids(store: Store) -> dict[str, int]:
    runs = query("SELECT job_id, run_id FROM runs ORDER BY job_id, run_id LIMIT 2", store=store).to_pylist()
    return {"job": runs[0]["job_id"], "run": runs[0]["run_id"], "other": runs[-1]["run_id"]}


def time_page(store: Store, page: str, ids: dict[str, int], repeats: int) -> dict[str, Any]:
    """Best-of-repeats seconds for the page's queries run one after another (as a page load does)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for name, params in PAGE_QUERIES[page]:
            module = get_module(name)
            module(module.params(**_fill(params, ids)), store=store)
        times.append(time.perf_counter() - start)
    return {"page": page, "best_s": round(min(times), 3), "all_s": [round(t, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path(".work/bench-store"))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    store = Store.open(StoreConfig(data_dir=args.data_dir))
    counts = query("SELECT (SELECT count(*) FROM tokens) AS tokens, (SELECT count(*) FROM interventions) AS records",
                   store=store).to_pylist()[0]  # fmt: skip
    log.info(json.dumps({"store": str(args.data_dir), **counts}))
    ids = _ids(store)
    for page in PAGE_QUERIES:
        log.info(json.dumps(time_page(store, page, ids, args.repeats)))


if __name__ == "__main__":
    main()
