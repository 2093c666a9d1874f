"""A finished job's answers are kept past the short cache's life, a running job's are not, and the server's
warm-up leaves the Layer summary's first answers computed (ui/data.py answer, ui/background.py warm_store)."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import pytest

import ui.background
import ui.data
from tests.fixture_store import Fixture
from ui.data import SEED_INTERVENTIONS, answer


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every answer actually computed (a cache miss), in order, once no warm-up of an earlier app run is left."""
    for thread in threading.enumerate():
        if thread.name == ui.background.WARM_THREAD:
            thread.join()
    calls: list[tuple[str, dict[str, Any]]] = []
    compute = ui.data._computed

    def counted(name: str, params: dict[str, Any]) -> pd.DataFrame:
        calls.append((name, params))
        return compute(name, params)

    monkeypatch.setattr(ui.data, "_computed", counted)
    return calls


def test_a_finished_jobs_answer_outlives_the_short_cache(ui_store: Fixture, computed: list) -> None:
    job = ui_store.job_ids["all"]
    first = answer("runs", job=job)
    ui.data._fresh_answer.clear()  # what CACHE_TTL_S's expiry does
    assert answer("runs", job=job).equals(first) and len(computed) == 1


def test_a_running_jobs_answer_expires(ui_store: Fixture, computed: list, monkeypatch: pytest.MonkeyPatch) -> None:
    job = ui_store.job_ids["all"]
    jobs = ui.data.job_table()
    monkeypatch.setattr(ui.data, "job_table", lambda: jobs.assign(status="running", finished=None))
    answer("runs", job=job)
    ui.data._fresh_answer.clear()
    answer("runs", job=job)
    assert len(computed) == 2


def test_a_resumed_job_is_answered_anew(ui_store: Fixture, computed: list, monkeypatch: pytest.MonkeyPatch) -> None:
    job = ui_store.job_ids["all"]
    answer("runs", job=job)
    jobs = ui.data.job_table()
    later = jobs.assign(finished=jobs.finished + pd.Timedelta(seconds=1))  # finished again after a resume
    monkeypatch.setattr(ui.data, "job_table", lambda: later)
    answer("runs", job=job)
    assert len(computed) == 2


def test_the_warm_up_leaves_the_layer_summary_computed(
    ui_store: Fixture, computed: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui.background, "_WARMED_STORES", set())
    ui.background.warm_store()
    ui.background.warm_store()  # once per store: no second thread
    warming = [t for t in threading.enumerate() if t.name == ui.background.WARM_THREAD]
    assert len(warming) == 1
    warming[0].join()
    job = ui_store.job_ids["all"]  # the newest finished all-token job
    assert [(name, params["job"]) for name, params in computed] == [
        ("runs", job), ("verdict", job), ("layer_summary", job), ("compare_saes", job)
    ]  # fmt: skip
    answer("verdict", job=job)
    answer("layer_summary", job=job, interventions=SEED_INTERVENTIONS)  # as the page asks
    answer("compare_saes", job=job)
    assert len(computed) == 4  # all three from the cache
