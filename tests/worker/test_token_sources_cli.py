"""Token sources through `saegap evaluate`: --text-column and --context-size, their bad input, and a bare
.npy's warning stored on the job and shown by `saegap status`, the HTML report, the UI and `Results`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import saegap
from analysis.html_report import build_report
from saegap.cli import build_parser, main
from schema.config import StoreConfig
from schema.read import query
from schema.store import Store
from tests.worker.conftest import BOS
from worker.commands import spec_args

HOOK = "blocks.1.hook_resid_pre"
BARE = "is a bare .npy: it does not say which tokenizer made it"


def write_texts(path: Path, column: str, documents: int = 40) -> str:
    """One word per document (the tiny tokenizer has no pre-tokenizer): document i is token 1 + i % 63."""
    records = [{column: f"t{1 + i % 63}"} for i in range(documents)]
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), path)
    else:
        path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def flags(assets: dict[str, str], tokens: str, *extra: str) -> list[str]:
    return ["--model", assets["model"], "--sae", assets[HOOK], "--tokens", tokens, "--device", "cpu", *extra]


def sequence_tokens(data_dir: Path, sequence: int = 0) -> list[int]:
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        rows = query(
            "SELECT token_id FROM tokens WHERE sequence = $s ORDER BY position", {"s": sequence}, store=store
        ).to_pylist()
    return [row["token_id"] for row in rows]


def written(data_dir: Path) -> dict[str, int]:
    """What a job left in the store besides its own row: runs, token records, cached token sets."""
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        (job,) = store.list_jobs()
        runs = len(store.job_run_ids(job.id))
        tokens = query("SELECT count(*) AS n FROM tokens", store=store).to_pylist()[0]["n"]
    return {"runs": runs, "tokens": tokens, "cached": len(list((data_dir / "token_sets").glob("*.npy")))}


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("SAEGAP_BROKER_URL", "SAEGAP_DATABASE_URL", "SAEGAP_TOKEN_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SAEGAP_DATA", str(tmp_path / "store"))
    return tmp_path / "store"


# -- --text-column and --context-size ------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_text_column_and_context_size_flags_reach_the_rows(
    tiny_assets: dict[str, str], data_dir: Path, tmp_path: Path, suffix: str
) -> None:
    source = write_texts(tmp_path / f"mine{suffix}", "body")
    extra = ("--text-column", "body", "--context-size", "12", "--n-sequences", "4", "--interventions", "sae,eps_random")
    assert main(["evaluate", *flags(tiny_assets, source, *extra)]) == 0
    # Rows of 12: BOS, then documents t1, t2, ... joined by the separator (BOS), as SAELens cuts them.
    assert sequence_tokens(data_dir, 0) == [BOS, 1, BOS, 2, BOS, 3, BOS, 4, BOS, 5, BOS, 6]
    assert sequence_tokens(data_dir, 3)[:4] == [BOS, 19, BOS, 20]
    with Store.open(StoreConfig(data_dir=data_dir)) as store:
        (job,) = store.list_jobs()
    assert (job.spec.text_column, job.spec.context_size, job.warnings) == ("body", 12, [])


def test_submit_takes_the_same_token_flags() -> None:
    args = build_parser().parse_args(["submit", "--tokens", "x.jsonl", "--text-column", "body", "--context-size", "16"])
    spec = spec_args.spec_from_args(args)
    assert (spec.tokens, spec.text_column, spec.context_size) == ("x.jsonl", "body", 16)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_a_missing_text_column_is_one_error_naming_the_columns_and_writes_nothing(
    tiny_assets: dict[str, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    source = write_texts(tmp_path / f"mine{suffix}", "body")
    assert main(["evaluate", *flags(tiny_assets, source, "--text-column", "content")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1] == (
        f"saegap: job 1 failed: token source {source!r} has no column 'content' (nor input_ids or tokens); "
        "it has ['body']"
    )
    assert "Traceback" not in "\n".join(errors)
    assert written(data_dir) == {"runs": 0, "tokens": 0, "cached": 0}


def test_a_context_size_beyond_the_models_is_one_error(
    tiny_assets: dict[str, str], data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_texts(tmp_path / "mine.jsonl", "text")
    assert main(["evaluate", *flags(tiny_assets, source, "--context-size", "25")]) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-1] == "saegap: job 1 failed: context_size 25 is beyond the model's context of 24 tokens"
    assert written(data_dir) == {"runs": 0, "tokens": 0, "cached": 0}


def test_a_context_size_on_a_token_array_is_refused(
    tiny_assets: dict[str, str], data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", *flags(tiny_assets, tiny_assets["tokens"], "--context-size", "12")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == f"saegap: job 1 failed: context_size 12 applies to text; token set {tiny_assets['tokens']!r} " + (
        "has rows of 24 tokens"
    )
    assert written(data_dir) == {"runs": 0, "tokens": 0, "cached": 0}


# -- a bare .npy's warning -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_jobs(tiny_assets: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Job 1 on a bare .npy (no tokenizer), job 2 on text the model's tokenizer reads, in one store."""
    root = tmp_path_factory.mktemp("warnings")
    text = write_texts(root / "text.jsonl", "text", documents=200)
    with pytest.MonkeyPatch.context() as patch:
        for name in ("SAEGAP_BROKER_URL", "SAEGAP_DATABASE_URL", "SAEGAP_TOKEN_CACHE"):
            patch.delenv(name, raising=False)
        patch.setenv("SAEGAP_DATA", str(root / "store"))
        for tokens in (tiny_assets["tokens"], text):
            assert main(["evaluate", *flags(tiny_assets, tokens, "--n-sequences", "4")]) == 0
        yield root / "store"


def test_the_bare_npy_warning_is_stored_on_its_job_only(two_jobs: Path) -> None:
    with Store.open(StoreConfig(data_dir=two_jobs)) as store:
        bare, text = store.get_job(1), store.get_job(2)
    assert len(bare.warnings) == 1 and BARE in bare.warnings[0]
    assert text.warnings == [] and text.status == bare.status == "done"


def test_status_shows_the_warning(two_jobs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "1", "--data-dir", str(two_jobs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "job 1: done" and [line for line in lines if BARE in line] == [lines[-1]]
    assert lines[-1].startswith("warning: token set ")
    assert main(["status", "2", "--data-dir", str(two_jobs)]) == 0
    assert "warning" not in capsys.readouterr().out


def test_the_report_shows_the_warning_at_the_top(two_jobs: Path) -> None:
    with Store.open(StoreConfig(data_dir=two_jobs)) as store:
        bare, text = build_report(1, store=store), build_report(2, store=store)
    assert "<div class='warning'>" in bare and BARE in bare
    assert bare.index(BARE) < bare.index("<h2>")  # above the first section
    assert "<div class='warning'>" not in text and "bare .npy" not in text


def test_results_carry_the_warning(tiny_assets: dict[str, str], tmp_path: Path) -> None:
    results = saegap.evaluate(
        tiny_assets["model"], tiny_assets[HOOK], tokens=tiny_assets["tokens"], data_dir=tmp_path, device="cpu",
        n_sequences=2, interventions=["sae", "eps_random"],
    )  # fmt: skip
    assert len(results.warnings) == 1 and BARE in results.warnings[0]


@pytest.fixture
def ui_on(two_jobs: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The UI's default store is the two jobs' (as tests/ui/conftest.py's ui_store does for the fixture store)."""
    import streamlit as st

    import schema.store

    monkeypatch.setenv("SAEGAP_DATA", str(two_jobs))
    for name in ("SAEGAP_DATABASE_URL", "SAEGAP_BROKER_URL", "SAEGAP_UI_READ_ONLY"):
        monkeypatch.delenv(name, raising=False)
    schema.store.forget_process_stores()
    st.cache_data.clear()
    yield two_jobs
    from tests.ui.conftest import join_warm_up

    join_warm_up()  # the app's warm-up reads the environment's store: done before the environment goes back
    schema.store.forget_process_stores()
    st.cache_data.clear()


def test_the_ui_shows_the_warning_on_the_jobs_page_and_the_results_header(ui_on: Path) -> None:
    from streamlit.testing.v1 import AppTest

    from tests.ui.conftest import APP

    app = AppTest.from_file(str(APP), default_timeout=120).run()
    assert not app.exception, app.exception
    shown = [warning.value for warning in app.warning if BARE in warning.value]
    assert len(shown) == 1 and shown[0].startswith("job 1: token set ")
    app.switch_page("views/layer_summary.py").run()
    assert not app.exception, app.exception
    assert app.sidebar.selectbox[0].value == 2  # the newest finished job: text, no warning
    assert not [warning for warning in app.warning if BARE in warning.value]
    app.sidebar.selectbox[0].select(1).run()
    assert [warning.value for warning in app.warning if BARE in warning.value] == shown
