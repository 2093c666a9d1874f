"""SQL console: one read-only statement through analysis.console (the read path: allow-list, read process, limits)."""

from __future__ import annotations

import logging
import re

import streamlit as st

from analysis.console import StoreError, WriteRefusedError, one_line, run_statement

log = logging.getLogger(__name__)
MAX_BYTES = 64 * 2**20  # of one result: what a browser table and its CSV download can hold

EXAMPLE = """SELECT layer, sae, intervention, avg(kl) AS kl_mean, count(*) AS n
FROM interventions JOIN runs USING (run_id)
WHERE job_id = (SELECT max(job_id) FROM runs)  -- one job; each SAE on its own rows
GROUP BY ALL ORDER BY layer, sae, intervention"""


# A statement DuckDB cannot parse is reported as a syntax error, unless it names a write (then refused).
WRITE_WORD = re.compile(
    r"\b(INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|COPY|ATTACH|DETACH|PRAGMA|SET|CALL|INSTALL|LOAD|EXPORT|IMPORT)\b",
    re.IGNORECASE,
)


def _run(sql: str, timeout_s: float, max_rows: int) -> None:
    try:
        table = run_statement(sql, timeout_s=timeout_s, max_rows=max_rows, max_bytes=MAX_BYTES)
    except WriteRefusedError as error:
        if type(error.__cause__).__name__ == "ParserException" and not WRITE_WORD.search(sql):  # a typo
            st.error(f"Query failed: the SQL does not parse. {one_line(error.__cause__)}")
        else:
            st.error(f"Refused: this console only reads. {error}")
        return
    except StoreError as error:  # a limit (time, memory, rows, bytes) or the store: the message names it
        log.info("SQL console: %s", error, exc_info=True)
        st.error(one_line(error))
        return
    except Exception as error:  # DuckDB's own message (unknown column ...): its first line; the rest to the log
        log.info("SQL console query failed", exc_info=True)
        st.error(f"Query failed: {one_line(error)}")
        return
    frame = table.to_pandas()
    st.caption(f"{len(frame):,} rows")
    st.dataframe(frame, hide_index=True, width="stretch")
    st.download_button("Download CSV", frame.to_csv(index=False), file_name="saegap-query.csv", mime="text/csv")


st.title("SQL console")
st.caption(
    "Read-only: one SELECT (or WITH / DESCRIBE / SHOW TABLES / SUMMARIZE / EXPLAIN) over the tables runs, tokens, "
    "interventions, the rollups and the views token_records, token_gaps, with DuckDB's own functions. Writes, "
    "files, other databases, settings and multiple statements are refused; results over the row cap or "
    f"{MAX_BYTES // 2**20} MiB are refused, not cut."
)
with st.form("sql"):
    sql = st.text_area("SQL", EXAMPLE, height=160)
    left, right = st.columns(2)
    timeout_s = left.number_input("Time limit (s)", min_value=1.0, max_value=300.0, value=30.0)
    max_rows = right.number_input("Row cap", min_value=1, max_value=1_000_000, value=10_000)
    pressed = st.form_submit_button("Run", type="primary")
if pressed:
    _run(sql, float(timeout_s), int(max_rows))
