"""next_token_distributions embedded: the clean column is the model's own log-softmax; the SAE column moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schema.store import Store
from tests.worker.test_api import tiny_spec
from worker import api
from worker.errors import BadInput
from worker.prepare import cached_model


@pytest.fixture
def finished_job(tiny_assets: dict[str, str], tmp_store: Store, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.delenv("SAEGAP_BROKER_URL", raising=False)
    spec = tiny_spec(tiny_assets, n_sequences=4, interventions=["sae", "eps_random"])
    return api.submit(spec, store=tmp_store)


def test_columns_and_clean_log_probs(tiny_assets: dict[str, str], tmp_store: Store, finished_job: int) -> None:
    run_ids = sorted(tmp_store.job_run_ids(finished_job))
    table = api.next_token_distributions(finished_job, run_ids[1], sequence=2, position=7, top_k=5, store=tmp_store)
    assert table.schema == api.NEXT_TOKEN_SCHEMA
    rows = table.to_pydict()
    assert 5 <= table.num_rows <= 15 and rows["rank"][:5] == [1, 2, 3, 4, 5]  # union of three top-5, clean order
    tokens = torch.tensor(np.load(tiny_assets["tokens"])[2:3, :8])
    model = cached_model(tiny_assets["model"], "cpu", "float32", {})
    with torch.inference_mode():
        clean = torch.log_softmax(model(tokens)[0, -1], dim=-1)
    assert rows["token_id"][:5] == clean.topk(5).indices.tolist()
    np.testing.assert_allclose(rows["logprob_clean"], clean[rows["token_id"]].numpy(), atol=1e-5)
    assert not np.allclose(rows["logprob_sae"], rows["logprob_clean"], atol=1e-3)  # the splice changed something
    assert rows["token_text"][0] == model.tokenizer.decode([rows["token_id"][0]])


def test_bad_requests_name_the_problem(tmp_store: Store, finished_job: int) -> None:
    run_id = min(tmp_store.job_run_ids(finished_job))
    with pytest.raises(BadInput, match="sequence 4 is outside the job's 4 sequences"):
        api.next_token_distributions(finished_job, run_id, sequence=4, position=1, store=tmp_store)
    with pytest.raises(BadInput, match="position 24 is outside"):
        api.next_token_distributions(finished_job, run_id, sequence=0, position=24, store=tmp_store)
    with pytest.raises(ValueError, match="run 999 is not a run of job"):
        api.next_token_distributions(finished_job, 999, sequence=0, position=1, store=tmp_store)
