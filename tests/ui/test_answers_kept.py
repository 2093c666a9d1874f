"""A finished job's answers are kept past the short cache's life, a running job's are not, and the server's
warm-up leaves each page's first answers computed (ui/data.py answer, ui/background.py warm_store)."""

from __future__ import annotations

import threading
from typing import Any

import pandas as pd
import pytest

import ui.background
import ui.data
from tests.fixture_store import Fixture
from tests.ui.conftest import join_warm_up
from tests.ui.test_pages import open_page
from ui.data import SEED_INTERVENTIONS, answer

# The pages whose first answers the warm-up computes (ui/background.py warm_store): all but the Jobs page and
# the SQL console (no analysis question) and the single-token page (its draws follow a picked token).
WARMED_PAGES = ("layer_summary", "distributions", "gap_sources", "correlations", "tokens", "context")


@pytest.fixture
def computed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every answer actually computed (a cache miss), in order, once no warm-up of an earlier app run is left."""
    join_warm_up()
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


def test_the_warm_up_answers_each_pages_first_questions(
    ui_store: Fixture, computed: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ui.background, "_WARMED_STORES", set())
    ui.background.warm_store()
    ui.background.warm_store()  # once per store: no second thread
    warming = [t for t in threading.enumerate() if t.name == ui.background.WARM_THREAD]
    assert len(warming) == 1
    warming[0].join()
    all_token = ui_store.job_ids["all"]  # the newest finished all-token job
    assert computed[:4] == [
        ("runs", {"job": all_token}),
        ("verdict", {"job": all_token}),
        ("layer_summary", {"job": all_token, "interventions": SEED_INTERVENTIONS}),
        ("compare_saes", {"job": all_token}),
    ]  # fmt: skip  (the Layer summary's first)
    warmed = len(computed)
    for page in WARMED_PAGES:  # each opened as a user would, on its default job and widgets
        open_page(page, ui_store)
        assert computed[warmed:] == [], f"{page} asked what the warm-up did not: {computed[warmed:]}"
