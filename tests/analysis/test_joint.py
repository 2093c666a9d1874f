"""The joint module on a planted store: two single-site runs with KL a * c_s and b * c_s per token and
a joint run with j * c_s, so the ratios are exact in every bootstrap replicate (point intervals)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from analysis.joint import SCHEMA, Params, joint
from analysis.registry import MODULES
from schema.records import INTERVENTION_SCHEMA
from schema.spec import JobSpec
from tests.fixture_store import SAE_A, Fixture, FixtureJob, FixtureRun, _run_meta, _write_job, planted_tokens

N_SEQ, N_POS = 10, 5
POSITIONS = np.arange(1, N_POS)
SCALE = 0.1 * (1 + 0.5 * np.linspace(-1, 1, N_SEQ))
PLANTED = {"a": {"sae": 0.2, "eps_random": 0.1}, "b": {"sae": 0.3, "eps_random": 0.1},
           "joint": {"sae": 1.0, "eps_random": 0.2}}  # fmt: skip


def _interventions(factors: dict[str, float]) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in INTERVENTION_SCHEMA.names}
    for name, factor in factors.items():
        for sequence in range(N_SEQ):
            n = len(POSITIONS)
            rows["sequence"] += [sequence] * n
            rows["position"] += POSITIONS.tolist()
            rows["intervention"] += [name] * n
            rows["sample"] += [0] * n
            rows["kl"] += (factor * SCALE[sequence] * POSITIONS).tolist()
            rows["loss"] += [None] * n
            rows["loss_delta"] += [None] * n
    return pa.Table.from_pydict(rows, schema=INTERVENTION_SCHEMA)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    from schema.config import StoreConfig
    from schema.store import Store

    tokens = planted_tokens(N_SEQ, N_POS)
    saes = [SAE_A.format(layer=1), SAE_A.format(layer=2)]
    spec = JobSpec(model="planted", saes=saes, tokens="planted", n_sequences=N_SEQ, sequences_per_shard=4,
                   interventions=["sae", "eps_random"], joint=True)  # fmt: skip
    joint_meta = _run_meta("joint:" + "+".join(saes), 1, "all_tokens") | {"hook_point": "joint"}
    runs = [FixtureRun(_run_meta(saes[0], 1, "all_tokens"), tokens, _interventions(PLANTED["a"])),
            FixtureRun(_run_meta(saes[1], 2, "all_tokens"), tokens, _interventions(PLANTED["b"])),
            FixtureRun(joint_meta, tokens, _interventions(PLANTED["joint"]))]  # fmt: skip
    fixture = Fixture(store=Store.open(StoreConfig(data_dir=tmp_path_factory.mktemp("joint") / "store")))
    _write_job(fixture.store, FixtureJob("joint", spec, runs), fixture)
    yield fixture
    fixture.store.close()


@pytest.mark.parametrize("intervention", ["sae", "eps_random"])
def test_planted_joint_against_sum_and_max(planted: Fixture, intervention: str) -> None:
    table = joint(Params(job=planted.job_ids["joint"], n_boot=300), store=planted.store)
    assert table.schema == SCHEMA and table.num_rows == 2
    row = table.to_pandas().set_index("intervention").loc[intervention]
    a, b, j = (PLANTED[run][intervention] for run in ("a", "b", "joint"))
    mean = SCALE.mean() * POSITIONS.mean()
    assert (row.n_sites, row.n_sequences) == (2, N_SEQ)
    assert row.kl_joint == pytest.approx(j * mean, rel=1e-6)
    assert row.kl_sum_single == pytest.approx((a + b) * mean, rel=1e-6)
    assert row.kl_max_single == pytest.approx(max(a, b) * mean, rel=1e-6)
    for name, value in (("ratio_to_sum", j / (a + b)), ("ratio_to_max", j / max(a, b))):
        for end in ("", "_lo", "_hi"):  # KL stored as float32: exact to ~1e-7
            assert row[f"{name}{end}"] == pytest.approx(value, rel=1e-6)


def test_jobs_without_a_joint_run_have_no_row(fixture_store: Fixture) -> None:
    assert joint(Params(), store=fixture_store.store).num_rows == 0
    assert "joint" in MODULES


def test_report_has_the_gap_sources_section_only_with_their_records(planted: Fixture) -> None:
    from analysis.html_report import Answers, _gap_sources

    sections = "\n".join(_gap_sources(Answers(planted.job_ids["joint"], planted.store)))
    assert "Where does the gap come from?" in sections and "All SAEs spliced at once" in sections
    assert "linear and nonlinear parts" not in sections  # the planted job ran no error parts
    assert "ratio_to_sum" in sections
