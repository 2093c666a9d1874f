"""Every module: listed once, documented, and calm on empty and single-row stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from analysis.base import Filters
from analysis.registry import MODULES, UnknownModuleError, get_module
from schema.config import StoreConfig
from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.store import Store
from tests.fixture_store import FIXTURE_VERSIONS, Fixture

SEED_QUESTIONS = {
    "layer_summary", "kl_histogram", "by_position", "downstream", "sigma", "gap_correlates",
    "cross_layer", "top_tokens", "sensitivity_curve", "compare_saes",
}  # fmt: skip
# Nothing from one all-token `sae` record: a CI, std, z or correlation needs spread, a gap needs
# eps_random, downstream needs a single-token run. Plain aggregates give that record's row.
EMPTY_ON_ONE_RECORD = {"layer_summary", "sigma", "sigma_draws", "gap_correlates", "cross_layer", "top_tokens"}
EMPTY_ON_ONE_RECORD |= {"downstream", "verdict"}  # verdict: its ratios need a CI
EMPTY_ON_ONE_RECORD |= {"error_parts", "joint", "amplification"}  # no error parts, no joint run, no amplification sums


def test_registry_lists_every_seed_question_once() -> None:
    assert SEED_QUESTIONS <= set(MODULES)
    for name, module in MODULES.items():
        assert module.name == name and module.answer.__name__ == name
        assert issubclass(module.params, Filters)
        assert module.question and "\n" not in module.question and len(module.question) < 120


def test_unknown_module_names_the_choices() -> None:
    with pytest.raises(UnknownModuleError, match="layer_summary"):
        get_module("layer_sumary")


@pytest.fixture(scope="module")
def fixture_columns(fixture_store: Fixture) -> dict[str, list[str]]:
    return {name: module(store=fixture_store.store).column_names for name, module in MODULES.items()}


def _open_store(path: Path) -> Iterator[Store]:
    store = Store.open(StoreConfig(data_dir=path))
    yield store
    store.close()


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    yield from _open_store(tmp_path_factory.mktemp("empty"))


@pytest.fixture(scope="module")
def one_record_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    for store in _open_store(tmp_path_factory.mktemp("one_record")):
        _write_one_record(store)
        yield store


@pytest.mark.parametrize("name", sorted(MODULES))
def test_empty_store_gives_zero_rows_with_the_right_columns(name, empty_store, fixture_columns) -> None:
    table = MODULES[name](store=empty_store)
    assert table.num_rows == 0
    assert table.column_names == fixture_columns[name]


def _write_one_record(store: Store) -> None:
    """A job with one run, one shard, one intervened token and its one `sae` record."""
    job_id = store.create_job({"saes": ["one/blocks.0.hook_resid_pre"], "tokens": "one"}, FIXTURE_VERSIONS)
    meta = {"model": "m", "sae": "one/blocks.0.hook_resid_pre", "architecture": "standard",
            "hook_name": "blocks.0.hook_resid_pre", "hook_point": "resid_pre", "layer": 0, "scope": "all_tokens",
            "d_in": 4, "d_sae": 8}  # fmt: skip
    (run_id,) = store.add_runs(job_id, [meta])
    (shard_id,) = store.add_shards(job_id, [(0, 1)])
    token = {"sequence": [0], "position": [1], "token_id": [5], "token_text": [" a"], "next_token_id": [6],
             "clean_loss": [2.0], "intervened": [True], "norm": [3.0], "sae_norm": [2.5], "eps": [1.0],
             "cos_sim": [0.9], "l0": [7], "l1": [4.0]}  # fmt: skip
    record = {"sequence": [0], "position": [1], "intervention": ["sae"], "sample": [0], "kl": [0.5], "loss": [2.5],
              "loss_delta": [0.5]}  # fmt: skip
    tables = (
        pa.Table.from_pydict(token, schema=TOKEN_SCHEMA),
        pa.Table.from_pydict(record, schema=INTERVENTION_SCHEMA),
    )
    store.write_shard(job_id, shard_id, {run_id: tables})


@pytest.mark.parametrize("name", sorted(MODULES))
def test_single_record_store(name, one_record_store, fixture_columns) -> None:
    table = MODULES[name](store=one_record_store)
    assert table.column_names == fixture_columns[name]
    assert table.num_rows == (0 if name in EMPTY_ON_ONE_RECORD else 1)
