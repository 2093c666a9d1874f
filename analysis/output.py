"""A module's answer as text: an aligned table, CSV or JSON (what `saegap report NAME` prints)."""

from __future__ import annotations

import io
import json
import math
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv

OutputFormat = Literal["table", "csv", "json"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("table", "csv", "json")


def _json_value(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither; SAELens once wrote NaN as -1, docs/method.md §3.7)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def as_text(table: pa.Table, output_format: OutputFormat) -> str:
    if output_format == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        return buffer.getvalue().decode()
    if output_format == "json":
        rows = [{key: _json_value(value) for key, value in row.items()} for row in table.to_pylist()]
        return json.dumps(rows, indent=1, default=str) + "\n"
    if table.num_rows == 0:
        return f"(no rows; columns: {', '.join(table.column_names)})\n"
    return table.to_pandas().to_string(index=False, float_format=lambda v: f"{v:.6g}") + "\n"
