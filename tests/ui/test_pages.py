"""Every page of the app on the seeded fixture store (streamlit.testing.v1.AppTest, no browser)."""

from __future__ import annotations

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.fixture_store import LAYERS, PLANTED_TOP_TOKEN, SAE_A, TARGET_POSITION, Fixture
from tests.ui.conftest import APP

TIMEOUT_S = 120


def open_page(page: str, fixture: Fixture, job: str | None = None) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    app.switch_page(f"views/{page}.py").run()
    if job is not None:
        app.sidebar.selectbox[0].select(fixture.job_ids[job]).run()
    assert not app.exception, app.exception
    return app


def frames(app: AppTest) -> list[pd.DataFrame]:
    return [element.value for element in app.dataframe]


def test_jobs_page_lists_the_fixture_jobs(ui_store: Fixture) -> None:
    app = open_page("jobs", ui_store)
    jobs = frames(app)[0]
    assert set(jobs.job) == set(ui_store.job_ids.values())
    assert set(jobs.status) == {"done"} and set(jobs.scope) == {"all_tokens", "single_token"}
    assert app.text_input[0].value == "demo"  # the form starts from JobSpec's defaults


def test_jobs_form_names_an_invalid_spec(ui_store: Fixture) -> None:
    app = open_page("jobs", ui_store)
    app.multiselect[0].set_value(["eps_random"])  # no 'sae': JobSpec refuses
    app.button[0].click().run()
    assert not app.exception
    assert any("must include 'sae'" in error.value for error in app.error)
    assert set(frames(app)[0].job) == set(ui_store.job_ids.values())  # nothing was submitted


def test_layer_summary_shows_every_layer_and_the_planted_ratio(ui_store: Fixture) -> None:
    app = open_page("layer_summary", ui_store, "all")
    summary, compared = frames(app)[:2]
    assert set(summary.layer) == set(LAYERS)
    eps = summary[(summary.sae == SAE_A.format(layer=2)) & (summary.intervention == "sae")]
    assert eps.kl_ratio.iloc[0] == pytest.approx(4.0, rel=1e-4)
    assert len(compared[compared.layer == 1]) == 2  # two SAEs on layer 1's hook side by side
    assert len(app.get("vega_lite_chart")) == 4


def test_distributions_draw_a_histogram_per_run(ui_store: Fixture) -> None:
    app = open_page("distributions", ui_store, "all")
    charts = app.get("vega_lite_chart")
    assert len(charts) == 4 + 2  # KL histogram per run, then CE-loss histograms and KL by position
    assert not app.info


def test_correlation_explorer_finds_the_planted_cos_correlation(ui_store: Fixture) -> None:
    app = open_page("correlations", ui_store, "all")
    run_box, x_box = app.sidebar.selectbox[1], app.sidebar.selectbox[2]
    run_box.select(ui_store.run_ids[("all", SAE_A.format(layer=0))]).run()
    x_box.select("cos_sim").run()
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Pearson r"] == "-1.000" and metrics["Spearman ρ"] == "-1.000"
    assert metrics["tokens in sample"] == f"{40 * 7:,}"
    assert len(app.get("vega_lite_chart")) == 2  # scatter and the cross-layer heatmap


def test_tokens_page_puts_the_planted_token_first_and_lists_its_contexts(ui_store: Fixture) -> None:
    app = open_page("tokens", ui_store, "all")
    top = frames(app)[0]
    layer2 = top[top.sae == SAE_A.format(layer=2)]
    assert layer2.token_text.iloc[0] == PLANTED_TOP_TOKEN
    run_id = ui_store.run_ids[("all", SAE_A.format(layer=2))]
    app.selectbox[0].select((run_id, int(layer2.token_id.iloc[0]))).run()
    contexts = frames(app)[1]
    assert len(contexts) == 6 and contexts.context.str.contains(f"[[{PLANTED_TOP_TOKEN}]]", regex=False).all()
    assert {"kl_sae", "kl_eps_random", "kl_zero_ablation"} <= set(contexts.columns)


def test_single_token_page_shows_downstream_and_sigma(ui_store: Fixture) -> None:
    app = open_page("single_token", ui_store)  # only the single-token job is offered
    assert app.sidebar.selectbox[0].options == [
        f"job {ui_store.job_ids['single']} · fixture-model · single_token · done"
    ]
    tested = frames(app)[0]
    assert list(tested.z) == pytest.approx([3.0, -0.5, 1.0, 0.0], abs=1e-4) and set(tested.position) == {
        TARGET_POSITION
    }
    assert len(app.get("vega_lite_chart")) == 2


def test_context_page_asks_before_running_a_model(ui_store: Fixture) -> None:
    app = open_page("context", ui_store, "all")
    assert not app.get("vega_lite_chart")  # nothing computed until the button is pressed
    app.button[0].click().run()
    assert not app.exception
    assert app.error and "Could not compute" in app.error[0].value  # the fixture has no model to run
