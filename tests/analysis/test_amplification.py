"""The amplification module on a store with planted sums: per sequence s and layer l, the SAE's mean r is
c_s * SAE_R[l] and eps_random's c_s * EPS_R[l] (two draws), so every ratio is exact in every sequence and its
bootstrap interval is a point: the SAE's error starts at half the random one's and ends at twice it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis.amplification import FASTER, SAME, SCHEMA, SLOWER, Params, amplification
from analysis.registry import MODULES
from schema.records import AMPLIFICATION_SCHEMA, INTERVENTION_SCHEMA, TOKEN_SCHEMA
from schema.spec import JobSpec
from tests.fixture_store import SAE_A, Fixture, _run_meta

N_SEQ, POSITIONS, HOOK_LAYER = 12, 4, 1
C = 0.1 * (1 + 0.5 * np.linspace(-1, 1, N_SEQ))  # per-sequence scale
SAE_R = {1: 1.0, 2: 2.0, 3: 4.0}
EPS_R = {1: 2.0, 2: 1.5, 3: 2.0}
ZERO_R = {1: 1.0, 2: 1.0, 3: 1.0}
PLANTED = {"sae": (SAE_R, 1), "eps_random": (EPS_R, 2), "zero_ablation": (ZERO_R, 1)}  # r per layer, draws


def _amplification(sequences: range) -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in AMPLIFICATION_SCHEMA.names}
    for name, (by_layer, draws) in PLANTED.items():
        for layer, factor in by_layer.items():
            for s in sequences:
                n, r = POSITIONS * draws, C[s] * factor
                rows["sequence"].append(s)
                rows["intervention"].append(name)
                rows["layer"].append(layer)
                rows["n"].append(n)
                rows["r_sum"].append(n * r)
                rows["r_sq_sum"].append(n * r * r)
    return pa.Table.from_pydict(rows, schema=AMPLIFICATION_SCHEMA)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    from schema.config import StoreConfig
    from schema.store import Store
    from tests.schema.records import VERSIONS

    store = Store.open(StoreConfig(data_dir=tmp_path_factory.mktemp("amplification") / "store"))
    spec = JobSpec(model="planted", saes=[SAE_A.format(layer=HOOK_LAYER)], tokens="planted", n_sequences=N_SEQ,
                   sequences_per_shard=8, interventions=list(PLANTED))  # fmt: skip
    job_id = store.create_job(spec, VERSIONS)
    (run_id,) = store.add_runs(job_id, [_run_meta(SAE_A.format(layer=HOOK_LAYER), HOOK_LAYER, "all_tokens")])
    empty = (TOKEN_SCHEMA.empty_table(), INTERVENTION_SCHEMA.empty_table())
    ranges = [(0, 8), (8, N_SEQ)]
    for shard_id, (start, end) in zip(store.add_shards(job_id, ranges), ranges, strict=True):
        store.start_shard(shard_id, "test")  # a finished job, as the UI's job picker lists
        written = store.write_shard(job_id, shard_id, {run_id: empty}, {run_id: _amplification(range(start, end))})
        store.finish_shard(shard_id, rows_written=written.rows, tokens=written.tokens)
    yield Fixture(store=store, job_ids={"amp": job_id}, run_ids={("amp", "a"): run_id})
    store.close()


def test_planted_curves_give_their_ratios_growth_and_answers(planted: Fixture) -> None:
    table = amplification(Params(job=planted.job_ids["amp"], n_boot=300), store=planted.store)
    assert table.schema == SCHEMA and table.num_rows == len(PLANTED) * 3
    frame = table.to_pandas().set_index(["intervention", "layer"])
    weighted = C.mean()  # every sequence has the same n, so the mean r is factor * mean(c_s)
    for name, (by_layer, draws) in PLANTED.items():
        for layer, factor in by_layer.items():
            row = frame.loc[(name, layer)]
            assert (row.n_sequences, row.n, row.hook_layer) == (N_SEQ, N_SEQ * POSITIONS * draws, HOOK_LAYER)
            assert row.r_mean == pytest.approx(factor * weighted, rel=1e-9)
            assert row.r_mean_lo < row.r_mean < row.r_mean_hi  # c_s varies between sequences
            assert row.r_std == pytest.approx(factor * C.std(), rel=1e-6)
            assert row.growth == pytest.approx(factor / by_layer[HOOK_LAYER], rel=1e-9)
    for layer, answer in [(1, SLOWER), (2, FASTER), (3, FASTER)]:
        row = frame.loc[("sae", layer)]
        ratio = SAE_R[layer] / EPS_R[layer]
        assert (row.ratio_to_random, row.ratio_to_random_lo, row.ratio_to_random_hi) == pytest.approx((ratio,) * 3)
        growth = (SAE_R[layer] / SAE_R[1]) / (EPS_R[layer] / EPS_R[1])
        assert (row.growth_vs_random, row.growth_vs_random_lo, row.growth_vs_random_hi) == pytest.approx((growth,) * 3)
        assert (row.baseline, row.answer) == ("eps_random", answer)
    assert frame.loc[("zero_ablation", 1)].answer == SLOWER and frame.loc[("zero_ablation", 3)].answer == SLOWER
    itself = frame.loc[("eps_random", 3)]
    assert pd.isna(itself.ratio_to_random) and pd.isna(itself.answer) and itself.growth == pytest.approx(1.0)


def test_answers_hold_one_when_the_interval_does():
    import pandas as pd

    from analysis.amplification import _answers

    assert _answers(pd.Series([0.9, 1.1, 0.5, np.nan]), pd.Series([1.1, 1.3, 0.8, np.nan])) == [
        SAME, FASTER, SLOWER, None
    ]  # fmt: skip


def test_runs_without_amplification_have_no_row(fixture_store: Fixture) -> None:
    assert amplification(Params(), store=fixture_store.store).num_rows == 0
    assert "amplification" in MODULES
