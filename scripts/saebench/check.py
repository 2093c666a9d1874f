"""Write the JSON Schema of saegap's SAEBench eval type, and validate exported files with SAEBench's classes.

Usage (a separate venv with pydantic only; docs/saebench.md):
    SAEBENCH_BASE_EVAL_OUTPUT=<wheel>/sae_bench/evals/base_eval_output.py \
        python scripts/saebench/check.py SCHEMA_OUT.json [EXPORTED.json ...]
The schema is generated as SAEBench generates its own (evals/generate_json_schemas.py:
TypeAdapter(output class).json_schema()); each file is checked as SAEBench's testing_utils checks
one (TypeAdapter(output class).validate_json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import TypeAdapter

sys.path.insert(0, str(Path(__file__).parent))
from saegap_eval_output import SaegapKLGapEvalOutput


def main(schema_out: str, *files: str) -> int:
    adapter = TypeAdapter(SaegapKLGapEvalOutput)
    Path(schema_out).write_text(json.dumps(adapter.json_schema(), indent=2) + "\n")
    for file in files:
        adapter.validate_json(Path(file).read_text())
        print(f"ok {file}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
