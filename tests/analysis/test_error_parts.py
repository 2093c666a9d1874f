"""The error_parts module on a store with planted part/baseline ratios (built like test_verdict's):
the linear part's KL is exactly 3x its random baseline's in every sequence (a point interval,
pathological), the nonlinear part's exactly 0.5x (better than baseline)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from analysis.error_parts import SCHEMA, Params, error_parts
from analysis.registry import MODULES
from analysis.verdict import BETTER, PATHOLOGICAL
from schema.records import INTERVENTION_SCHEMA
from schema.spec import ERROR_PART_NAMES, JobSpec
from tests.fixture_store import SAE_A, Fixture, FixtureJob, FixtureRun, _run_meta, _write_job, planted_tokens

N_SEQ, N_POS = 12, 5
POSITIONS = np.arange(1, N_POS)
SCALE = 0.1 * (1 + 0.5 * np.linspace(-1, 1, N_SEQ))
PLANTED = {"sae": 1.0, "sae_error_linear": 0.6, "eps_random_linear": 0.2, "sae_error_nonlinear": 0.1,
           "eps_random_nonlinear": 0.2}  # fmt: skip  # KL per token = value * c_s * p


def _interventions() -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in INTERVENTION_SCHEMA.names}
    for name, factor in PLANTED.items():
        for sequence in range(N_SEQ):
            rows["sequence"] += [sequence] * len(POSITIONS)
            rows["position"] += POSITIONS.tolist()
            rows["intervention"] += [name] * len(POSITIONS)
            rows["sample"] += [0] * len(POSITIONS)
            rows["kl"] += (factor * SCALE[sequence] * POSITIONS).tolist()
            rows["loss"] += [None] * len(POSITIONS)
            rows["loss_delta"] += [None] * len(POSITIONS)
    return pa.Table.from_pydict(rows, schema=INTERVENTION_SCHEMA)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    from schema.config import StoreConfig
    from schema.store import Store

    tokens = planted_tokens(N_SEQ, N_POS)
    sae = SAE_A.format(layer=2)
    spec = JobSpec(model="planted", saes=[sae], tokens="planted", n_sequences=N_SEQ, sequences_per_shard=8,
                   interventions=["sae", *ERROR_PART_NAMES])  # fmt: skip
    meta = _run_meta(sae, 2, "all_tokens") | {"error_ridge": 1e-3, "error_linear_r2": 0.75}
    job = FixtureJob("parts", spec, [FixtureRun(meta, tokens, _interventions())])
    fixture = Fixture(store=Store.open(StoreConfig(data_dir=tmp_path_factory.mktemp("parts") / "store")))
    _write_job(fixture.store, job, fixture)
    yield fixture
    fixture.store.close()


def test_planted_parts_give_their_ratios_verdicts_and_carrier(planted: Fixture) -> None:
    table = error_parts(Params(job=planted.job_ids["parts"], n_boot=500), store=planted.store)
    assert table.schema == SCHEMA and table.num_rows == 1
    row = table.to_pandas().iloc[0]
    assert row.error_linear_r2 == pytest.approx(0.75)
    assert row.kl_ratio_linear == pytest.approx(3.0, rel=1e-6)
    assert row.kl_ratio_linear_lo == pytest.approx(3.0, rel=1e-6) and row.kl_ratio_linear_hi == pytest.approx(
        3.0, rel=1e-6
    )
    assert row.kl_ratio_nonlinear == pytest.approx(0.5, rel=1e-6)
    assert (row.verdict_linear, row.verdict_nonlinear, row.carried_by) == (PATHOLOGICAL, BETTER, "linear")
    assert row.share_of_sae_kl_linear == pytest.approx(0.6, rel=1e-6)
    assert row.kl_sae == pytest.approx(SCALE.mean() * POSITIONS.mean(), rel=1e-6)


def test_runs_without_the_parts_have_no_row(fixture_store: Fixture) -> None:
    assert error_parts(Params(), store=fixture_store.store).num_rows == 0
    assert "error_parts" in MODULES
