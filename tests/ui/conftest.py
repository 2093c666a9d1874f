"""UI fixtures: the seeded analysis store as the environment's default store."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixture_store import Fixture

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


@pytest.fixture
def ui_store(fixture_store: Fixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fixture]:
    """Point SAEGAP_DATA at the fixture store, so the UI's default store (read and job API) is it."""
    import streamlit as st

    import schema.store

    monkeypatch.setenv("SAEGAP_DATA", str(fixture_store.store.config.data_dir))
    monkeypatch.delenv("SAEGAP_DATABASE_URL", raising=False)
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)
    schema.store.forget_process_stores()  # opened once per process; reopen on the fixture's dir
    st.cache_data.clear()
    yield fixture_store
    join_warm_up()
    schema.store.forget_process_stores()
    st.cache_data.clear()


def join_warm_up() -> None:
    """Wait for the UI's store warm-up (an app run starts one per store and process, ui/background.py): it
    opens the store the environment names, so it must end before a test puts the environment back."""
    import ui.background

    for thread in threading.enumerate():
        if thread.name == ui.background.WARM_THREAD:
            thread.join()
