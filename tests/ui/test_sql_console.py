"""The SQL console reads, refuses every write and whatever is off the read path's allow-list, and shows
one-line errors; the store is unchanged afterwards (tests/schema/test_read_security.py runs the whole
family of issue 11 through the console on SQLite and PostgreSQL stores)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.fixture_store import Fixture
from tests.ui.conftest import APP

COUNTS = (
    "SELECT (SELECT count(*) FROM runs) AS runs, (SELECT count(*) FROM tokens) AS tokens, "
    "(SELECT count(*) FROM interventions) AS interventions"
)
WRITES = [
    "INSERT INTO runs SELECT * FROM runs",
    "UPDATE interventions SET kl = 0",
    "DELETE FROM tokens",
    "CREATE TABLE copy AS SELECT * FROM runs",
    "DROP TABLE interventions",
    "ATTACH ':memory:' AS other",
    "COPY runs TO '/tmp/saegap-ui-leak.csv'",
    "SELECT 1; DELETE FROM tokens",
    "SELECT 1; DROP TABLE runs; --",
    "WITH gone AS (DELETE FROM tokens RETURNING *) SELECT count(*) FROM gone",
    "PRAGMA enable_checkpoint_on_shutdown",
]


def run_sql(sql: str) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    app.switch_page("views/sql_console.py").run()
    app.text_area[0].set_value(sql)
    app.button[0].click().run()
    assert not app.exception, app.exception
    return app


def store_counts(fixture: Fixture) -> list[int]:
    from schema.read import query

    return list(query(COUNTS, store=fixture.store).to_pylist()[0].values())


def test_a_read_returns_rows_and_a_csv(ui_store: Fixture) -> None:
    app = run_sql("SELECT layer, count(*) AS n FROM runs GROUP BY layer ORDER BY layer")
    table = app.dataframe[0].value
    assert table.layer.tolist() == [0, 1, 2] and table.n.tolist() == [1, 3, 1]
    assert not app.error


@pytest.mark.parametrize("sql", WRITES)
def test_writes_are_refused_and_change_nothing(ui_store: Fixture, sql: str) -> None:
    before = store_counts(ui_store)
    app = run_sql(sql)
    assert app.error and "Refused" in app.error[0].value, [e.value for e in app.error]
    assert not app.dataframe
    assert store_counts(ui_store) == before


def test_row_cap_is_an_error_not_a_truncation(ui_store: Fixture) -> None:
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    app.switch_page("views/sql_console.py").run()
    app.text_area[0].set_value("SELECT * FROM tokens")
    app.number_input[1].set_value(10)
    app.button[0].click().run()
    assert app.error and "max_rows=10" in app.error[0].value and not app.dataframe


def test_errors_are_one_line(ui_store: Fixture) -> None:
    """DuckDB's message goes on with the statement and a caret; the console shows its first line, logs the rest."""
    app = run_sql("SELECT no_such_column FROM tokens")
    errors = [error.value for error in app.error]
    assert len(errors) == 1 and errors[0].startswith("Query failed: Binder Error") and "\n" not in errors[0], errors


def test_a_statement_off_the_allow_list_is_refused_by_name(ui_store: Fixture) -> None:
    before = store_counts(ui_store)
    app = run_sql("SELECT * FROM ducklake_merge_adjacent_files('lake')")
    assert app.error and "ducklake_merge_adjacent_files" in app.error[0].value and "allow-list" in app.error[0].value
    assert store_counts(ui_store) == before
