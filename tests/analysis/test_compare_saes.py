from __future__ import annotations

import pytest

from analysis.compare_saes import Params, compare_saes
from tests.fixture_store import EPS_KL_MEAN, PLANTED_KL_RATIO, PLANTED_KL_RATIO_B, SAE_A, SAE_B, Fixture


def test_two_saes_on_one_hook_side_by_side(fixture_store: Fixture) -> None:
    table = compare_saes(Params(job=fixture_store.job_ids["all"], layer=1), store=fixture_store.store).to_pandas()
    assert list(table.sae) == [SAE_A.format(layer=1), SAE_B]
    assert (table.hook_name == "blocks.1.hook_resid_pre").all() and (table.n_saes_on_hook == 2).all()
    assert table.kl_ratio.to_numpy() == pytest.approx([PLANTED_KL_RATIO[1], PLANTED_KL_RATIO_B], rel=1e-6)
    assert table.kl_eps_random.to_numpy() == pytest.approx([EPS_KL_MEAN] * 2, rel=1e-6)


def test_sae_filter(fixture_store: Fixture) -> None:
    params = Params(job=fixture_store.job_ids["all"], saes=[SAE_B, SAE_A.format(layer=0)])
    table = compare_saes(params, store=fixture_store.store).to_pandas()
    assert list(table.sae) == [SAE_A.format(layer=0), SAE_B]
    assert list(table.n_saes_on_hook) == [1, 1]  # counted among the chosen SAEs
