"""A shared UI deployment (docs/security.md): `saegap ui --read-only` hides job submission and cancel,
and the Jobs form takes token sets only by bundled name or from under the data dir (SAEGAP_UI_TOKEN_DIRS
adds directories)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import schema.store
from saegap.cli import main
from schema.config import StoreConfig
from schema.spec import JobSpec
from schema.store import Store
from tests.schema.records import VERSIONS
from tests.ui.conftest import APP
from ui.deployment import READ_ONLY_ENV, TOKEN_DIRS_ENV, allowed_token_set, read_only


@pytest.fixture
def queued_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """A store at $SAEGAP_DATA with one queued job (so the Jobs page offers to cancel it)."""
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "data"))
    for name in ("SAEGAP_DATABASE_URL", "SAEGAP_DATA_PATH", "SAEGAP_BROKER_URL", READ_ONLY_ENV, TOKEN_DIRS_ENV):
        monkeypatch.delenv(name, raising=False)
    store = Store.open(StoreConfig.from_env())
    store.create_job(JobSpec(), VERSIONS)
    schema.store.forget_process_stores()
    st.cache_data.clear()
    yield store
    schema.store.forget_process_stores()
    st.cache_data.clear()
    store.close()


def jobs_page() -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not app.exception, app.exception
    return app


def labels(app: AppTest) -> set[str]:
    return {widget.label for widget in [*app.button, *app.selectbox, *app.text_input]}


def test_the_jobs_page_offers_submit_and_cancel_by_default(queued_store: Store) -> None:
    assert {"Submit job", "Cancel job", "Cancel", "Token set"} <= labels(jobs_page())


def test_read_only_hides_submit_and_cancel(queued_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(READ_ONLY_ENV, "1")
    app = jobs_page()
    assert not {"Submit job", "Cancel job", "Cancel", "Token set"} & labels(app)
    assert any("read-only" in info.value for info in app.info)
    assert len(app.dataframe[0].value) == 1  # the job list stays


def test_saegap_ui_read_only_sets_the_mode_for_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.web import bootstrap

    monkeypatch.setenv(READ_ONLY_ENV, "")  # recorded, so the "1" that `ui --read-only` sets is undone afterwards
    monkeypatch.setattr(bootstrap, "run", lambda *args, **kwargs: None)  # no server: only what run() sets up
    monkeypatch.setattr(bootstrap, "load_config_options", lambda **kwargs: None)
    assert main(["ui", "--port", "8599"]) == 0 and not read_only()
    assert main(["ui", "--read-only", "--port", "8599"]) == 0 and read_only()


def test_token_sets_are_bundled_names_or_files_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    inside = data / "sub" / "tokens.npy"
    np.save(inside, np.zeros((2, 4), dtype=np.int64))
    (data / "escape.npy").symlink_to("/etc/passwd")
    monkeypatch.setenv("SAEGAP_DATA", str(data))
    monkeypatch.delenv(TOKEN_DIRS_ENV, raising=False)
    assert allowed_token_set("demo") == ("demo", None)
    assert allowed_token_set(str(inside)) == (str(inside.resolve()), None)
    for outside in ("/etc/passwd", str(data / "sub" / ".." / ".." / "x.npy"), str(data / "escape.npy")):
        _, problem = allowed_token_set(outside)
        assert problem and "SAEGAP_UI_TOKEN_DIRS" in problem, outside
    monkeypatch.setenv(TOKEN_DIRS_ENV, f"/srv/none:{tmp_path}")
    assert allowed_token_set(str(tmp_path / "x.npy")) == (str((tmp_path / "x.npy").resolve()), None)


def test_the_jobs_form_refuses_a_token_file_outside_the_data_dir(queued_store: Store) -> None:
    app = jobs_page()
    next(widget for widget in app.text_input if widget.label == "Token set").set_value("/etc/passwd")
    next(widget for widget in app.button if widget.label == "Submit job").click().run()
    errors = [error.value for error in app.error]
    assert any("not started" in e and "'/etc/passwd' is neither a bundled name" in e for e in errors), errors
    assert len(queued_store.list_jobs()) == 1  # nothing submitted
