"""`saegap report`: one module's answer in three formats, the HTML report, and bad input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from saegap.cli import main
from tests.fixture_store import PLANTED_KL_RATIO, PLANTED_TOP_TOKEN, Fixture


def _report(fixture: Fixture, *argv: str) -> list[str]:
    return ["report", *argv, "--data-dir", str(fixture.store.config.data_dir)]


def test_json_answer(fixture_store: Fixture, capsys) -> None:
    job = str(fixture_store.job_ids["all"])
    argv = _report(fixture_store, "layer_summary", "--job", job, "--layer", "2", "--format", "json",
                   "--set", 'interventions=["sae"]', "--set", "n_boot=100")  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["intervention"] for row in rows] == ["sae"]
    assert rows[0]["kl_ratio"] is None  # eps_random filtered out: null, not NaN, in JSON
    assert rows[0]["kl_mean"] == pytest.approx(PLANTED_KL_RATIO[2] * 0.25)


def test_csv_answer(fixture_store: Fixture, capsys) -> None:
    argv = _report(fixture_store, "top_tokens", "--layer", "2", "--format", "csv", "--set", "top=1")
    assert main(argv) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["token_text"] for row in rows if row["layer"] == "2" and row["sae"].startswith("fixture-a")] == [
        PLANTED_TOP_TOKEN
    ]


def test_table_answer_and_empty_answer(fixture_store: Fixture, capsys) -> None:
    assert main(_report(fixture_store, "compare_saes", "--job", str(fixture_store.job_ids["all"]))) == 0
    assert "fixture-b/blocks.1.hook_resid_pre" in capsys.readouterr().out
    assert main(_report(fixture_store, "downstream", "--job", str(fixture_store.job_ids["all"]))) == 0
    assert capsys.readouterr().out.startswith("(no rows; columns: job_id, run_id")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layer_sumary"], "unknown analysis module 'layer_sumary'"),
        (["top_tokens", "--set", "min_count=1"], "min_count"),
        (["top_tokens", "--set", "nonsense"], "KEY=VALUE"),
        (["top_tokens", "--set", "colour=red"], "colour"),
        ([], "needs --job"),
        (["--job", "999"], "unknown job id 999"),
    ],
)
def test_bad_input_is_one_clear_error(fixture_store: Fixture, capsys, argv: list[str], message: str) -> None:
    assert main(_report(fixture_store, *argv)) == 2
    assert message in capsys.readouterr().err


def test_html_report_is_self_contained(fixture_store: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert main(_report(fixture_store, "--job", str(fixture_store.job_ids["all"]), "--out", str(out))) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for title in (
        "Mean KL per layer",
        "Distribution of per-token KL",
        "KL gap across layers",
        "Top tokens by mean KL gap",
    ):
        assert f"<h2>{title}</h2>" in page
    assert page.count("<svg") >= 5 and "<table" in page
    assert "src=" not in page and "<link" not in page and "<script" not in page  # nothing to fetch
    assert repr(PLANTED_TOP_TOKEN) in page  # quoted: the leading space stays visible
    assert "Single-token interventions" not in page  # job "all" has no single-token runs


def test_html_report_of_a_single_token_job(fixture_store: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "single.html"
    assert main(_report(fixture_store, "--job", str(fixture_store.job_ids["single"]), "--out", str(out))) == 0
    page = out.read_text()
    assert "Single-token interventions: KL downstream" in page and "How pathological" in page
