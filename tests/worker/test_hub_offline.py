"""Models and SAEs from the Hugging Face Hub and from local transformers checkpoints, tested offline.

A tiny random GPT-2-architecture model and a tiny SAE are written into a temporary Hugging Face
cache in the Hub's own layout (models--<org>--<name>/snapshots/<revision>/..., refs/main), under
names that exist: the model `gpt2` (TransformerLens's `gpt2-small`) and the SAELens release
`gpt2-small-res-jb` (repo jbloom/GPT2-Small-SAEs-Reformatted). `saegap evaluate` then runs under
HF_HUB_OFFLINE=1 through the real HookedTransformer.from_pretrained_no_processing and
SAE.from_pretrained: nothing is mocked, only the cache's contents are small.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub.file_download import repo_folder_name
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

from schema.config import StoreConfig
from schema.read import query
from schema.store import Store
from tests.worker.conftest import BOS, CONTEXT, VOCAB, _tokenizer_dir, random_tokens, tiny_sae
from worker import loading
from worker.errors import BadInput

RELEASE = "gpt2-small-res-jb"
SAE_ID = "blocks.0.hook_resid_pre"
MODEL_NAME = "gpt2-small"  # the release's model; TransformerLens's alias of the Hub repo `gpt2`
REVISION = "0" * 40


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """A random GPT-2 with the tiny tokenizer's vocabulary (2 layers, width 32).

    n_ctx is set as in the Hub's gpt2 config.json: TransformerLens reads it for GPT-2.
    """
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_ctx=CONTEXT, n_embd=32, n_layer=2, n_head=4, bos_token_id=BOS,
        eos_token_id=BOS,
    )  # fmt: skip
    return GPT2LMHeadModel(config).eval()


def save_checkpoint(model: GPT2LMHeadModel, path: Path) -> Path:
    """What a fine-tuning run leaves: save_pretrained's model files plus the tokenizer's."""
    model.save_pretrained(path)
    for item in Path(_tokenizer_dir()).iterdir():
        shutil.copy(item, path / item.name)
    return path


def hub_snapshot(cache: Path, repo_id: str) -> Path:
    """The snapshot folder of `repo_id` in a Hub cache, with refs/main pointing at it (huggingface_hub's layout)."""
    repo = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_hub_cache(cache: Path) -> None:
    """The tiny model as the Hub repo `gpt2` and the tiny SAE as gpt2-small-res-jb's first SAE."""
    release = get_pretrained_saes_directory()[RELEASE]
    assert release.model == MODEL_NAME
    save_checkpoint(tiny_gpt2(), hub_snapshot(cache, "gpt2"))
    sae = tiny_sae(SAE_ID, 32, seed=3)
    sae.cfg.metadata.model_name = MODEL_NAME
    folder = hub_snapshot(cache, release.repo_id) / release.saes_map[SAE_ID]
    sae.save_model(folder)
    save_file({"sparsity": torch.zeros(sae.cfg.d_sae)}, str(folder / "sparsity.safetensors"))


def offline_env(cache: Path, data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SAEGAP_BROKER_URL", "SAEGAP_DATABASE_URL")}
    return env | {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "SAEGAP_DATA": str(data)}


def test_saegap_evaluate_runs_a_hub_model_and_release_offline(tmp_path: Path) -> None:
    cache, data = tmp_path / "hub", tmp_path / "data"
    write_hub_cache(cache)
    np.save(tmp_path / "tokens.npy", random_tokens(8, seed=7).numpy())
    saegap = str(Path(sys.executable).with_name("saegap"))
    flags = ["--model", MODEL_NAME, "--sae", f"{RELEASE}/{SAE_ID}", "--tokens", str(tmp_path / "tokens.npy")]
    result = subprocess.run(
        [saegap, "evaluate", *flags, "--device", "cpu"], env=offline_env(cache, data), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with Store.open(StoreConfig(data_dir=data)) as store:
        (job,) = store.list_jobs()
        found = query(
            "SELECT count(*) AS n, avg(kl) AS kl FROM token_records WHERE job_id = $job", {"job": job.id}, store=store
        ).to_pylist()[0]
    assert job.status == "done" and job.spec.saes == [f"{RELEASE}/{SAE_ID}"]
    assert found["n"] == 8 * (CONTEXT - 1) * len(job.spec.interventions)
    assert np.isfinite(found["kl"]) and found["kl"] > 0


def test_a_hub_name_offline_is_one_clear_error(tmp_path: Path) -> None:
    """Offline with an empty cache: the job fails with one line naming the problem, and no records."""
    cache, data = tmp_path / "empty-hub", tmp_path / "data"
    cache.mkdir()
    np.save(tmp_path / "tokens.npy", random_tokens(4, seed=7).numpy())
    saegap = str(Path(sys.executable).with_name("saegap"))
    flags = ["--model", MODEL_NAME, "--sae", f"{RELEASE}/{SAE_ID}", "--tokens", str(tmp_path / "tokens.npy")]
    result = subprocess.run(
        [saegap, "evaluate", *flags, "--device", "cpu"], env=offline_env(cache, data), capture_output=True, text=True
    )
    assert result.returncode == 1, result.stderr[-3000:]
    failure = result.stderr.strip().splitlines()[-1]
    assert failure.startswith("saegap: job 1 failed: SAE gpt2-small-res-jb/blocks.0.hook_resid_pre is not in the")
    assert "HF_HUB_OFFLINE=1" in failure and "Traceback" not in result.stderr
    with Store.open(StoreConfig(data_dir=data)) as store:
        assert query("SELECT count(*) AS n FROM tokens", store=store).to_pylist() == [{"n": 0}]


def test_a_local_transformers_checkpoint_gives_the_same_log_probs(tmp_path: Path) -> None:
    hf_model = tiny_gpt2(seed=1)
    path = save_checkpoint(hf_model, tmp_path / "finetuned-gpt2")
    assert loading.is_hf_checkpoint(path)
    model = loading.load_model(str(path), "cpu", "float32", {})
    tokens = random_tokens(3, seed=2)
    with torch.inference_mode():
        ours = torch.log_softmax(model(tokens).double(), dim=-1)
        theirs = torch.log_softmax(hf_model(tokens).logits.double(), dim=-1)
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 32 and model.cfg.original_architecture == "GPT2LMHeadModel"
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)
    assert model.tokenizer.convert_tokens_to_ids("t5") == 5  # the checkpoint's own tokenizer


def test_a_broken_transformers_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(BadInput, match="cannot load the transformers checkpoint"):
        loading.load_model(str(path), "cpu", "float32", {})
