"""Free SQL from a person (the UI's console): one read-only statement, under the read path's limits.

Not a named question like the other modules: the statement is the user's. It runs through
schema.read.query like every read (allow-list, read process, time, memory, row and byte caps;
docs/security.md), so the UI reaches the store only through analysis/.
"""

from __future__ import annotations

import pyarrow as pa

from schema.errors import StoreError as StoreError  # the errors a caller tells apart, named here for the UI
from schema.errors import WriteRefusedError as WriteRefusedError
from schema.read import one_line as one_line
from schema.read import query


def run_statement(sql: str, timeout_s: float, max_rows: int, max_bytes: int) -> pa.Table:
    """The statement's result, or StoreError naming the limit or refusal that stopped it."""
    return query(sql, timeout_s=timeout_s, max_rows=max_rows, max_bytes=max_bytes)
