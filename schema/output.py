"""A result table as text: an aligned table, CSV or JSON. The one renderer of `saegap sql` and `saegap report`."""

from __future__ import annotations

import io
import json
import math
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.csv as pacsv

OutputFormat = Literal["table", "csv", "json"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)


def render(table: pa.Table, output_format: OutputFormat) -> str:
    """An aligned table (NULL for nulls, a row count), CSV with a header, or a JSON array of row objects."""
    if output_format == "csv":
        buffer = io.BytesIO()
        pacsv.write_csv(table, buffer)
        return buffer.getvalue().decode()
    if output_format == "json":
        rows = [{key: _json_value(value) for key, value in row.items()} for row in table.to_pylist()]
        return json.dumps(rows, default=str) + "\n"  # one line: easy to pipe
    if table.num_rows == 0:
        return f"(no rows; columns: {', '.join(table.column_names)})\n"
    return _aligned(table)


def _json_value(value: Any) -> Any:
    """NaN and infinities become null (JSON has neither; SAELens once wrote NaN as -1, docs/method.md §3.7)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.6g}"  # 6 significant figures; a whole number keeps its ".0" so it still reads as a float
    return text if not math.isfinite(value) or any(mark in text for mark in ".e") else text + ".0"


def _aligned(table: pa.Table) -> str:
    cells = [[_cell(value) for value in row.values()] for row in table.to_pylist()]
    header = table.column_names
    widths = [max([len(name)] + [len(row[i]) for row in cells]) for i, name in enumerate(header)]
    rows = [header, *cells]
    lines = [" | ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(lines) + f"\n({table.num_rows} rows)\n"
