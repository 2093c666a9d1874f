"""The verdict module on a store with planted ratios on both sides of 1, and on the shared fixture.

The planted store (built here through the store API, like tests/fixture_store.py) has one
all-token run: 40 sequences x 7 positions (0 = BOS, not intervened; 6 has no next token).
Within sequence s the SAE's KL at position p is p * c_s; each baseline's per-sequence sums
are a fixed multiple of the SAE's, so its ratio is the same in every bootstrap replicate and
its interval collapses on the planted value, or (cos_random_*) the baseline varies per
sequence independently of the SAE, planting a ratio with a real interval. KL is stored as
FLOAT (float32), so ratios are compared to a relative 1e-6.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from analysis.layer_summary import Params as SummaryParams
from analysis.layer_summary import layer_summary
from analysis.verdict import BASELINES, BETTER, NO_GAP, PATHOLOGICAL, SCHEMA, Params, verdict
from schema.records import INTERVENTION_SCHEMA
from schema.spec import JobSpec
from tests.fixture_store import (
    PLANTED_KL_RATIO,
    PLANTED_Z,
    SAE_A,
    Fixture,
    FixtureJob,
    FixtureRun,
    _run_meta,
    _write_job,
    planted_tokens,
)

N_SEQ, N_POS = 40, 7
POSITIONS = np.arange(1, N_POS)  # intervened positions 1..6
SEQ_SCALE = 0.1 * (1 + 0.3 * np.linspace(-1, 1, N_SEQ))  # c_s, mean 0.1
# KL ratio sae / baseline whose interval is a point (baseline sums = sae sums / ratio in every sequence)
EXACT_KL_RATIO = {"eps_random": 2.0, "eps_cov_random": 0.5, "eps_real_diff": 1.0}
# KL ratio with a real interval: baseline KL constant per sequence, mean(c) * 3.5 * (1 + 0.2 w_s) / ratio
NOISY_KL_RATIO = {"cos_random_sae_norm": 1.5, "cos_random_true_norm": 1.0}
EXPECTED_VERDICT = {"eps_random": PATHOLOGICAL, "eps_cov_random": BETTER, "eps_real_diff": NO_GAP,
                    "cos_random_sae_norm": PATHOLOGICAL, "cos_random_true_norm": NO_GAP}  # fmt: skip
SAE_LOSS_DELTA = 0.2  # loss_delta per token x c_s; baseline's: SAE_LOSS_DELTA / CE ratio
PLANTED_CE_RATIO = {"eps_random": 4.0, "eps_cov_random": 0.25, "eps_real_diff": 1.0, "cos_random_sae_norm": 2.0,
                    "cos_random_true_norm": 0.8}  # fmt: skip
# sae at p is p*c, eps_random at p is (7 - p)*c/2: the SAE's KL is larger at p = 3..6, 4 of 6 positions
PLANTED_FRAC_ABOVE = 4 / 6


def _planted_kls() -> dict[str, np.ndarray]:
    """(S, 6) KL per intervention over the intervened positions."""
    sae = SEQ_SCALE[:, None] * POSITIONS[None, :]
    reversed_sae = SEQ_SCALE[:, None] * POSITIONS[None, ::-1]  # same per-sequence sums, other order
    wobble = 1 + 0.2 * np.sin(np.arange(N_SEQ) * 2.4)  # w_s, independent of c_s
    wobble = wobble / wobble.mean()  # exactly mean 1: the noisy ratios' point estimates are exact
    kls = {"sae": sae}
    kls |= {name: reversed_sae / ratio for name, ratio in EXACT_KL_RATIO.items()}
    for name, ratio in NOISY_KL_RATIO.items():
        kls[name] = np.repeat((SEQ_SCALE.mean() * 3.5 * wobble / ratio)[:, None], len(POSITIONS), axis=1)
    return kls


def _interventions() -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in INTERVENTION_SCHEMA.names}
    has_next = POSITIONS < N_POS - 1
    for name, kl in _planted_kls().items():
        per_token = SAE_LOSS_DELTA / PLANTED_CE_RATIO.get(name, 1.0)
        for sequence in range(N_SEQ):
            delta = [per_token * SEQ_SCALE[sequence] if h else None for h in has_next]
            rows["sequence"] += [sequence] * len(POSITIONS)
            rows["position"] += POSITIONS.tolist()
            rows["intervention"] += [name] * len(POSITIONS)
            rows["sample"] += [0] * len(POSITIONS)
            rows["kl"] += kl[sequence].tolist()
            rows["loss"] += [None if d is None else 3.0 + d for d in delta]
            rows["loss_delta"] += delta
    return pa.Table.from_pydict(rows, schema=INTERVENTION_SCHEMA)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    from schema.config import StoreConfig
    from schema.store import Store

    tokens = planted_tokens(N_SEQ, N_POS)
    sae = SAE_A.format(layer=3)
    spec = JobSpec(model="planted", saes=[sae], tokens="planted", n_sequences=N_SEQ, sequences_per_shard=16,
                   interventions=["sae", *BASELINES])  # fmt: skip
    job = FixtureJob("planted", spec, [FixtureRun(_run_meta(sae, 3, "all_tokens"), tokens, _interventions())])
    fixture = Fixture(store=Store.open(StoreConfig(data_dir=tmp_path_factory.mktemp("verdict") / "store")))
    _write_job(fixture.store, job, fixture)
    yield fixture
    fixture.store.close()


@pytest.fixture(scope="module")
def row(planted: Fixture) -> pd.Series:
    table = verdict(Params(job=planted.job_ids["planted"], n_boot=2000), store=planted.store)
    assert table.schema == SCHEMA and table.num_rows == 1
    return table.to_pandas().iloc[0]


@pytest.mark.parametrize("baseline", BASELINES)
def test_planted_ratios_and_verdicts(row: pd.Series, baseline: str) -> None:
    kl_ratio = EXACT_KL_RATIO.get(baseline) or NOISY_KL_RATIO[baseline]
    assert row[f"kl_ratio_{baseline}"] == pytest.approx(kl_ratio, rel=1e-6)
    assert row[f"ce_ratio_{baseline}"] == pytest.approx(PLANTED_CE_RATIO[baseline], rel=1e-6)
    assert row[f"verdict_{baseline}"] == EXPECTED_VERDICT[baseline]
    low, high = row[f"kl_ratio_{baseline}_lo"], row[f"kl_ratio_{baseline}_hi"]
    if baseline in EXACT_KL_RATIO:  # sums proportional in every sequence: every replicate gives the ratio
        assert low == pytest.approx(kl_ratio, rel=1e-6) and high == pytest.approx(kl_ratio, rel=1e-6)
    else:  # a real interval around the planted ratio, ~ +-2 * 0.2 * ratio / sqrt(40) wide
        assert low < kl_ratio < high and 0.05 < (high - low) / kl_ratio < 0.3
    # the CE loss per token is c_s times a constant: the CE ratio's interval is a point too
    assert row[f"ce_ratio_{baseline}_lo"] == pytest.approx(PLANTED_CE_RATIO[baseline], rel=1e-6)


def test_means_counts_and_token_share(row: pd.Series) -> None:
    assert row.kl_sae == pytest.approx(SEQ_SCALE.mean() * POSITIONS.mean(), rel=1e-6)
    assert row.loss_delta_sae == pytest.approx(SAE_LOSS_DELTA * SEQ_SCALE.mean(), rel=1e-6)
    assert row.kl_eps_random == pytest.approx(row.kl_sae / 2, rel=1e-6)
    assert (row.n_tokens, row.n_sequences) == (N_SEQ * len(POSITIONS), N_SEQ)
    assert row.frac_tokens_sae_above_eps_random == pytest.approx(PLANTED_FRAC_ABOVE)
    assert np.isnan(row.z_median) and np.isnan(row.z_p90) and np.isnan(row.frac_z_above_2)  # all-token: no draws


def test_a_missing_baseline_has_no_verdict(tmp_path: Path, fixture_store: Fixture) -> None:
    table = verdict(Params(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pandas()
    assert table.verdict_eps_random.tolist() == [PATHOLOGICAL]
    assert table.verdict_eps_cov_random.isna().all() and table.kl_ratio_eps_cov_random.isna().all()


def test_sigma_summary_of_a_single_token_job(fixture_store: Fixture) -> None:
    row = verdict(Params(job=fixture_store.job_ids["single"]), store=fixture_store.store).to_pandas().iloc[0]
    z = np.array(PLANTED_Z)
    assert row.z_median == pytest.approx(np.median(z), abs=1e-4)  # 0.5
    assert row.z_p90 == pytest.approx(np.quantile(z, 0.9), abs=1e-4)  # 2.4, interpolated as quantile_cont does
    assert row.frac_z_above_2 == pytest.approx(np.mean(z > 2))  # 1 of 4


def test_interval_to_eps_random_is_layer_summarys(fixture_store: Fixture) -> None:
    job = fixture_store.job_ids["all"]
    ours = verdict(Params(job=job), store=fixture_store.store).to_pandas().set_index("run_id")
    theirs = layer_summary(SummaryParams(job=job), store=fixture_store.store).to_pandas()
    theirs = theirs[theirs.intervention == "sae"].set_index("run_id")
    for column in ("", "_lo", "_hi"):
        assert ours[f"kl_ratio_eps_random{column}"].to_numpy() == pytest.approx(
            theirs.loc[ours.index, f"kl_ratio{column}"].to_numpy(), rel=1e-12
        )
    layer0 = ours.loc[fixture_store.run_ids[("all", SAE_A.format(layer=0))]]
    assert layer0.kl_ratio_eps_random == pytest.approx(PLANTED_KL_RATIO[0])
    assert layer0.kl_ratio_eps_real_diff == pytest.approx(PLANTED_KL_RATIO[0] / 1.5)  # eps_real_diff = 1.5 eps_random


def test_filters_select_runs(fixture_store: Fixture) -> None:
    table = verdict(Params(layer=1, n_boot=100), store=fixture_store.store).to_pandas()
    assert sorted(table.scope) == ["all_tokens", "all_tokens", "single_token"]
    assert verdict(Params(layer=7), store=fixture_store.store).num_rows == 0
