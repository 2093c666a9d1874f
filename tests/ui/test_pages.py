"""Every page of the app on the seeded fixture store (streamlit.testing.v1.AppTest, no browser).

Chart assertions read the Vega-Lite spec each altair chart sends to the browser: what a user
sees (a rule at 1, a fixed colour, an ordinal axis with one label per offset) is in it.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.colours import colour_of
from tests.fixture_store import LAYERS, PLANTED_TOP_TOKEN, POSITIONS, SAE_A, SAE_B, TARGET_POSITION, WINDOW, Fixture
from tests.ui.conftest import APP
from ui.data import job_choices, visible

TIMEOUT_S = 120
VERDICT = "Verdict: the gap survives the anisotropic baselines in 3 of 4 runs; not in layer 1 " + SAE_B


def open_page(page: str, fixture: Fixture, job: str | None = None) -> AppTest:
    app = AppTest.from_file(str(APP), default_timeout=TIMEOUT_S).run()
    app.switch_page(f"views/{page}.py").run()
    if job is not None:
        app.sidebar.selectbox[0].select(fixture.job_ids[job]).run()
    assert not app.exception, app.exception
    return app


def frames(app: AppTest) -> list[pd.DataFrame]:
    return [element.value for element in app.dataframe]


def specs(app: AppTest) -> list[dict[str, Any]]:
    return [json.loads(chart.proto.spec) for chart in app.get("vega_lite_chart")]


def chart_data(app: AppTest, index: int) -> pd.DataFrame:
    """The rows of every dataset chart `index` sends (altair's named datasets, Arrow IPC)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    proto = app.get("vega_lite_chart")[index].proto
    return pd.concat([convert_arrow_bytes_to_pandas_df(d.data.data) for d in proto.datasets], ignore_index=True)


def encodings(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Every layer's (or the facet's inner spec's) mark and encoding."""
    inner = spec.get("spec", spec)
    return [{"mark": layer["mark"], **layer.get("encoding", {})} for layer in inner.get("layer", [inner])]


def colour_range(spec: dict[str, Any]) -> dict[str, str]:
    scale = next(e["color"]["scale"] for e in encodings(spec) if "scale" in e.get("color", {}))
    return dict(zip(scale["domain"], scale["range"], strict=True))


def test_the_app_hides_the_deploy_button_and_names_saegap(ui_store: Fixture) -> None:
    open_page("jobs", ui_store)
    assert st.get_option("client.toolbarMode") == "viewer"
    assert "saegap" in APP.read_text() and 'page_title="saegap"' in APP.read_text()


def test_pages_open_on_the_newest_finished_job_not_the_newest_job() -> None:
    jobs = pd.DataFrame(
        {"job": [9, 8, 7, 6], "status": ["failed", "running", "done", "done"], "scope": ["all_tokens"] * 4}
    )
    assert job_choices(jobs) == [7, 6, 8]


def test_jobs_page_lists_the_fixture_jobs_with_links(ui_store: Fixture) -> None:
    app = open_page("jobs", ui_store)
    jobs = frames(app)[0]
    assert set(jobs.job) == set(ui_store.job_ids.values())
    assert set(jobs.status) == {"done"} and set(jobs.scope) == {"all_tokens", "single_token"}
    assert "duration" in jobs.columns
    assert app.text_input[0].value == "demo"  # the form starts from JobSpec's defaults
    links = [link.proto for link in app.get("page_link")]
    layer_links = [link for link in links if link.label == "Layer summary"]
    assert (
        len(layer_links) == 1 and f"job={ui_store.job_ids['all']}" in layer_links[0].page + layer_links[0].query_string
    )


def test_jobs_form_names_an_invalid_spec(ui_store: Fixture) -> None:
    app = open_page("jobs", ui_store)
    app.multiselect[0].set_value(["eps_random"])  # no 'sae': JobSpec refuses
    app.button[0].click().run()
    assert not app.exception
    assert any("must include 'sae'" in error.value for error in app.error)
    assert set(frames(app)[0].job) == set(ui_store.job_ids.values())  # nothing was submitted


def test_jobs_form_refuses_an_unknown_sae_before_starting(ui_store: Fixture) -> None:
    app = open_page("jobs", ui_store)
    app.text_area[0].set_value("demo-res/blocks.9.hook_resid_pre")
    app.button[0].click().run()
    assert not app.exception and not app.success
    errors = [error.value for error in app.error]
    assert any("not started" in e and "has no SAE 'blocks.9.hook_resid_pre'; it has blocks.0" in e for e in errors), (
        errors
    )
    assert set(frames(app)[0].job) == set(ui_store.job_ids.values())


def test_layer_summary_opens_with_the_verdict_and_a_ratio_chart(ui_store: Fixture) -> None:
    app = open_page("layer_summary", ui_store, "all")
    assert any(VERDICT in md.value for md in app.markdown), [md.value for md in app.markdown]
    printed = frames(app)[0]
    row = printed[printed.sae == SAE_A.format(layer=2)].iloc[0]
    assert row["KL ratio to eps_random"].startswith("4 [") and row["verdict vs eps_real_diff"] == "pathological"
    ratio = specs(app)[0]
    layers = encodings(ratio)
    assert layers[0]["mark"]["type"] == "rule" and layers[0]["y"]["field"] == "y"  # the line at 1
    assert any(layer["mark"]["type"] == "rule" and "y2" in layer for layer in layers)  # CI bars
    assert any(layer.get("shape", {}).get("field") == "release" for layer in layers)  # SAEs told apart
    assert colour_range(ratio) == {b: colour_of(b) for b in ("eps_random", "eps_cov_random", "eps_real_diff")}


def test_layer_summary_shows_every_run_with_fixed_colours(ui_store: Fixture) -> None:
    app = open_page("layer_summary", ui_store, "all")
    summary, compared = frames(app)[1:3]
    assert set(summary.layer) == set(LAYERS) and set(summary.intervention) == {
        "sae", "eps_random", "eps_cov_random", "eps_real_diff"
    }  # fmt: skip
    eps = summary[(summary.sae == SAE_A.format(layer=2)) & (summary.intervention == "sae")]
    assert eps.kl_ratio.iloc[0] == pytest.approx(4.0, rel=1e-4)
    assert len(compared[compared.layer == 1]) == 2  # two SAEs on layer 1's hook side by side
    kl_chart = specs(app)[1]
    assert colour_range(kl_chart)["sae"] == colour_of("sae")
    x = encodings(kl_chart)[0]["x"]
    assert x["field"] == "run" and x["axis"]["labelLimit"] == 0  # one column per run, full SAE names
    app.multiselect[1].set_value(["eps_random", "sae"]).run()  # a subset keeps each name's colour
    assert not app.exception
    assert colour_range(specs(app)[1]) == {"sae": colour_of("sae"), "eps_random": colour_of("eps_random")}


def test_distributions_default_to_the_seed_figures(ui_store: Fixture) -> None:
    app = open_page("distributions", ui_store, "all")
    charts = specs(app)
    assert len(charts) == 4  # KL histograms (a panel per run), CE-loss panels, KL-vs-cos curve, KL by position
    assert charts[0]["facet"]["field"] == "run" and len(set(chart_data(app, 0).dropna(subset=["bin_lo"]).run)) == 4
    histogram = encodings(charts[0])
    assert histogram[0]["y"]["stack"] is None and histogram[0]["y2"] == {"datum": 0}  # bars from zero, not dashes
    assert "zero_ablation" not in colour_range(charts[0]) and "mean_ablation" not in colour_range(charts[0])
    assert any(layer["mark"]["type"] == "text" and layer["text"]["field"] == "p999_label" for layer in histogram)
    printed = frames(app)[0]
    assert {"kl_mean", "kl_p99.9"} <= set(printed.columns) and set(printed.intervention) == {
        "sae", "eps_random", "eps_cov_random", "eps_real_diff"
    }  # fmt: skip
    loss = charts[1]
    assert loss["facet"]["column"]["field"] == "intervention" and loss["resolve"]["scale"]["x"] == "independent"
    curve = charts[2]
    assert set(colour_range(curve)) == {"sae", "eps_random", "cos_random_sae_norm", "cos_random_true_norm"}
    assert encodings(curve)[0]["x"]["field"] == "cos_sim_mean"
    assert not app.info


def test_correlation_explorer_finds_the_planted_cos_correlation(ui_store: Fixture) -> None:
    app = open_page("correlations", ui_store, "all")
    run_box, x_box = app.selectbox[0], app.selectbox[1]
    run_box.select(ui_store.run_ids[("all", SAE_A.format(layer=0))]).run()
    x_box.select("cos_sim").run()
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics["Pearson r"] == "-1.000" and metrics["Spearman ρ"] == "-1.000"
    assert metrics["tokens in sample"] == f"{40 * 7:,}"
    assert len(app.get("vega_lite_chart")) == 2  # scatter and the cross-layer heatmap


def test_correlation_explorer_defaults_and_hexbin(ui_store: Fixture) -> None:
    app = open_page("correlations", ui_store, "all")
    app.selectbox[0].select(ui_store.run_ids[("all", SAE_A.format(layer=0))]).run()
    other = app.selectbox[3].value  # the next layer of the same SAE, not layer 0
    assert other == ui_store.run_ids[("all", SAE_A.format(layer=1))]
    assert app.slider[0].max == POSITIONS - 1 and app.slider[0].value == (0, POSITIONS - 1)
    app.radio[0].set_value("hexbin (binned density)").run()
    assert not app.exception
    hexbin = encodings(specs(app)[0])[0]
    assert hexbin["mark"]["type"] == "rect" and hexbin["x"]["bin"] == {"maxbins": 40}
    assert hexbin["x"]["title"] == "position (tokens)"
    cells = chart_data(app, 1)
    assert "L1 · " + SAE_B in set(cells.a) and "L1 · " + SAE_B in set(cells.b)  # each cell names the SAE


def test_tokens_page_puts_the_planted_token_first_and_lists_its_contexts(ui_store: Fixture) -> None:
    app = open_page("tokens", ui_store, "all")
    top = frames(app)[0]
    layer2 = top[top.sae == SAE_A.format(layer=2)]
    assert layer2.token_text.iloc[0] == visible(PLANTED_TOP_TOKEN) == "␣zebra"
    charts = specs(app)
    assert len(charts) == 4  # one chart (its own axis) per run, not one 5,500 px chart
    layers = encodings(charts[-1])
    assert layers[0]["y"]["sort"][0] == "␣zebra"  # largest first
    assert layers[1]["mark"]["type"] == "rule" and layers[1]["x2"]["field"] == "hi"  # spread bars
    run_id = ui_store.run_ids[("all", SAE_A.format(layer=2))]
    app.selectbox[0].select((run_id, int(layer2.token_id.iloc[0]))).run()
    contexts = frames(app)[1]
    assert len(contexts) == 6 and contexts.context.str.contains(f"[[{PLANTED_TOP_TOKEN}]]", regex=False).all()
    assert {"kl_sae", "kl_eps_random", "kl_zero_ablation"} <= set(contexts.columns)


def test_single_token_page_shows_downstream_bars_and_sigma(ui_store: Fixture) -> None:
    app = open_page("single_token", ui_store)  # only the single-token job is offered
    assert app.sidebar.selectbox[0].options == [
        f"job {ui_store.job_ids['single']} · fixture-model · single_token · done"
    ]
    tested = frames(app)[0]
    assert list(tested.z) == pytest.approx([3.0, -0.5, 1.0, 0.0], abs=1e-4) and set(tested.position) == {
        TARGET_POSITION
    }
    downstream, bars, sigma = specs(app)
    assert downstream["encoding"]["x"]["type"] == "ordinal"  # one label per offset
    assert sorted(set(chart_data(app, 0).offset)) == list(range(WINDOW + 1))
    assert bars["facet"]["column"]["field"] == "where"
    assert any(layer["mark"]["type"] == "text" for layer in encodings(sigma))  # the SAE line's value label
    assert "SAE KL 1.3 (z = 3.00)" in set(chart_data(app, 2).label)
    metrics = {metric.label: metric.value for metric in app.metric}
    assert metrics == {"median z": "0.50", "90th percentile of z": "2.40", "tokens with z > 2": "25%"}


def test_context_page_shows_the_context_before_running_a_model(ui_store: Fixture) -> None:
    app = open_page("context", ui_store, "all")
    assert not app.get("vega_lite_chart")  # nothing computed until the button is pressed
    context = next(md.value for md in app.markdown if md.value.startswith("**Context**"))
    assert "[[" in context and "␣" in context
    assert {"sae", "eps_random"} <= set(frames(app)[0].columns)  # every intervention's recorded KL
    app.button[0].click().run()
    assert not app.exception
    assert app.error and "Could not compute" in app.error[0].value  # the fixture has no model to run


def test_sql_console_reports_a_typo_as_a_syntax_error_and_its_example_reads_one_job(ui_store: Fixture) -> None:
    app = open_page("sql_console", ui_store)
    app.button[0].click().run()  # the example query as shown
    example = frames(app)[0]
    assert set(example.sae) == {SAE_A.format(layer=1)}  # the newest job only (the single-token one), per SAE
    app.text_area[0].set_value("SELEC layer FROM runs")
    app.button[0].click().run()
    errors = [error.value for error in app.error]
    assert (
        len(errors) == 1 and errors[0].startswith("Query failed: the SQL does not parse") and "Refused" not in errors[0]
    )


def test_context_page_legend_names_each_series_kl_and_labels_whitespace_tokens(
    ui_store: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa

    import worker.api

    texts = [" the", "\n", "const"]
    rows = [{"token_id": i, "token_text": text, "logprob_clean": -1.0 - i, "logprob_sae": -1.5 - i,
             "logprob_eps_random": -1.1 - i, "rank": i + 1} for i, text in enumerate(texts)]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=worker.api.NEXT_TOKEN_SCHEMA)
    monkeypatch.setattr(worker.api, "next_token_distributions", lambda *args, **kwargs: table)
    app = open_page("context", ui_store, "all")
    recorded = frames(app)[0].iloc[0]
    app.button[0].click().run()
    assert not app.exception and not app.error
    shown = chart_data(app, 0)
    assert {"␣the", "↵", "const"} <= set(shown.label)
    assert f"sae (KL {recorded['sae']:.3g} nats)" in set(shown.series)
    assert f"eps_random (KL {recorded['eps_random']:.3g} nats)" in set(shown.series)


def test_loss_histograms_bin_each_intervention_on_its_own_range(ui_store: Fixture) -> None:
    app = open_page("distributions", ui_store, "all")
    loss = chart_data(app, 1)  # after the one KL histogram chart
    widths = (loss.bin_hi - loss.bin_lo).groupby(loss.intervention).first()
    assert widths["sae"] != pytest.approx(widths["eps_random"])  # not the shared range of every intervention
    assert loss[loss.intervention == "eps_random"].bin.nunique() > 6  # spread over many bins, not 3-6
