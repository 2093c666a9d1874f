"""The 'Where does the gap come from?' page on the fixture store (no error parts, no amplification, no joint
run) and on the amplification module's planted store."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.analysis.test_amplification import planted  # noqa: F401  (the planted amplification store)
from tests.fixture_store import Fixture
from tests.ui.conftest import APP, join_warm_up


def test_page_says_how_to_get_each_measurement_when_the_job_has_none(ui_store: Fixture) -> None:
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page("views/gap_sources.py").run()
    assert not app.exception, app.exception
    infos = " ".join(info.value for info in app.info)
    assert "sae_error_linear" in infos and "--joint" in infos
    assert [s.value for s in app.subheader] == ["The error's linear and nonlinear parts",
                                                "How far each error is amplified through later layers",
                                                "All SAEs spliced at once"]  # fmt: skip
    assert "amplification records" in infos


def test_page_shows_the_planted_amplification(planted: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    import streamlit as st

    import schema.store

    monkeypatch.setenv("SAEGAP_DATA", str(planted.store.config.data_dir))
    monkeypatch.delenv("SAEGAP_DATABASE_URL", raising=False)
    schema.store.forget_process_stores()
    st.cache_data.clear()
    try:
        app = AppTest.from_file(str(APP), default_timeout=120).run()
        app.switch_page("views/gap_sources.py").run()
        assert not app.exception, app.exception
        assert not any("amplification records" in info.value for info in app.info)
        table = app.dataframe[0].value  # the last layer's comparisons: sae and zero_ablation against eps_random
        assert sorted(table.intervention) == ["sae", "zero_ablation"] and set(table.layer) == {3}
        assert table.set_index("intervention").loc["sae", "answer"] == "faster"
    finally:
        join_warm_up()
        schema.store.forget_process_stores()
        st.cache_data.clear()


def test_jobs_form_offers_the_error_parts_and_a_joint_run(ui_store: Fixture) -> None:
    app = AppTest.from_file(str(APP), default_timeout=120).run()
    app.switch_page("views/jobs.py").run()
    assert not app.exception, app.exception
    assert "sae_error_linear" in app.multiselect[0].options
    assert "sae_error_linear" not in app.multiselect[0].value  # opt-in
    joint = [box for box in app.checkbox if "joint run" in box.label]
    assert len(joint) == 1 and joint[0].value is False
