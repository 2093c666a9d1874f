"""The bundled demo model, tokenizer, held-out tokens and SAEs (models/, built by scripts/demo/build.sh).

Everything is loaded with the plain library calls a user (and worker/loading.py) makes, offline.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from sae_lens import SAE
from sae_lens.evals import EvalConfig, run_evals
from sae_lens.training.activation_scaler import ActivationScaler
from sae_lens.training.activations_store import ActivationsStore
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
REGISTRY = json.loads((MODELS_DIR / "registry.json").read_text())
SAE_IDS = [(release, sae_id) for release, entry in REGISTRY["releases"].items() for sae_id in entry["saes"]]
BOS = "<|endoftext|>"
# Quick run_evals (2 + 2 batches of 32 held-out rows) vs the card's figures (8 + 8 batches; the reconstruction
# rows 0-63 are a subset of the card's 0-255, the sparsity/variance rows 64-127 are not in the card's 256-511):
# absolute tolerance per metric for that sampling spread. Measured for demo-res layer 2: |dL0| 1.6,
# |dEV| 0.001, |dCE score| 0.002, |dKL| 0.003.
CARD_TOLERANCE = {"l0": 5.0, "explained_variance": 0.03, "ce_loss_score": 0.03, "kl_div_with_sae": 0.03}


def model_dir() -> Path:
    return MODELS_DIR / REGISTRY["models"]["demo"]["path"]


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(model_dir()))


@pytest.fixture(scope="module")
def model(tokenizer: PreTrainedTokenizerFast) -> HookedTransformer:
    """The loader recipe of worker/loading.py, spelled out with the library calls."""
    cfg = json.loads((model_dir() / "config.json").read_text())
    model = HookedTransformer(HookedTransformerConfig(**cfg), tokenizer=tokenizer)
    state = {name: tensor.float() for name, tensor in load_file(model_dir() / "model.safetensors").items()}
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def heldout_tokens() -> np.ndarray:
    return np.load(MODELS_DIR / REGISTRY["token_sets"]["demo"]["path"])


@pytest.fixture(scope="module")
def card_figures() -> dict[str, Any]:
    return {
        "baselines": json.loads((MODELS_DIR / "demo" / "baselines.json").read_text()),
        "saes": json.loads((MODELS_DIR / "demo" / "sae_evals.json").read_text())["saes"],
    }


def load_sae(release: str, sae_id: str) -> SAE:
    return SAE.load_from_disk(str(MODELS_DIR / REGISTRY["releases"][release]["path"] / sae_id), dtype="float32")


def test_registry_points_at_existing_files() -> None:
    assert set(REGISTRY) == {"models", "releases", "token_sets"}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in model_dir().iterdir()
    }
    for release, sae_id in SAE_IDS:
        assert REGISTRY["releases"][release]["model"] == "demo"
        sae_path = MODELS_DIR / REGISTRY["releases"][release]["path"] / sae_id
        assert {p.name for p in sae_path.iterdir()} >= {"cfg.json", "sae_weights.safetensors"}
    assert {release for release, _ in SAE_IDS} == {"demo-res", "demo-res-topk", "demo-attn"}


def test_committed_weights_fit_the_size_budget() -> None:
    weights = [p for p in MODELS_DIR.rglob("*") if p.suffix in {".safetensors", ".npy"}]
    assert sum(p.stat().st_size for p in weights) <= 40 * 2**20


def test_tokenizer_uses_endoftext_as_bos_eos_pad(tokenizer: PreTrainedTokenizerFast) -> None:
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.pad_token == BOS
    assert len(tokenizer) == 4096
    text = "def f(x):\n    return x ** 2  # ünïcode"
    ids = tokenizer.encode(text)
    assert tokenizer.bos_token_id not in ids  # BOS is added by the model's to_tokens, not by encode
    assert tokenizer.decode(ids) == text  # byte-level: lossless


def test_model_to_tokens_prepends_bos(model: HookedTransformer) -> None:
    tokens = model.to_tokens("The list.append() method")
    assert tokens[0, 0].item() == model.tokenizer.bos_token_id
    str_tokens = model.to_str_tokens("The list.append() method")
    assert str_tokens[0] == BOS and "".join(str_tokens[1:]) == "The list.append() method"


def test_heldout_tokens_shape_and_bos_column(heldout_tokens: np.ndarray, model: HookedTransformer) -> None:
    assert heldout_tokens.dtype in (np.uint16, np.int32)
    assert heldout_tokens.shape[0] >= 1024 and heldout_tokens.shape[1] == model.cfg.n_ctx == 128
    assert (heldout_tokens[:, 0] == model.tokenizer.bos_token_id).all()
    assert int(heldout_tokens.max()) < model.cfg.d_vocab
    assert len(np.unique(heldout_tokens, axis=0)) == len(heldout_tokens)  # no duplicated rows


def test_heldout_loss_beats_the_bigram_baseline(
    model: HookedTransformer, heldout_tokens: np.ndarray, card_figures: dict[str, Any]
) -> None:
    tokens = torch.from_numpy(heldout_tokens[:64].astype(np.int64))
    with torch.no_grad():
        logits = model(tokens, return_type="logits")  # (B, P, V)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten()).item()
    baselines = card_figures["baselines"]
    assert baselines["model_ce"] < baselines["bigram_ce"] < baselines["unigram_ce"]
    assert loss < baselines["bigram_ce"]


@pytest.mark.parametrize(("release", "sae_id"), SAE_IDS)
def test_sae_loads_and_reads_its_hook(model: HookedTransformer, heldout_tokens: np.ndarray, release: str, sae_id: str):
    sae = load_sae(release, sae_id)
    meta = sae.cfg.metadata
    assert (meta.hook_name, meta.model_name, meta.model_from_pretrained_kwargs) == (sae_id, "demo", {})
    assert meta.hook_head_index is None
    tokens = torch.from_numpy(heldout_tokens[:2].astype(np.int64))
    _, cache = model.run_with_cache(tokens, names_filter=sae_id)
    acts = cache[sae_id].flatten(2)  # (B, P, D); hook_z: (B, P, n_heads, d_head) -> heads concatenated
    assert sae.cfg.d_in == acts.shape[-1] == model.cfg.d_model
    assert sae.cfg.d_sae == 16 * sae.cfg.d_in
    with torch.no_grad():
        features = sae.encode(acts)
        assert features.shape == (2, 128, sae.cfg.d_sae)
        assert sae.decode(features).shape == acts.shape


def quick_run_evals(model: HookedTransformer, sae: SAE, heldout_tokens: np.ndarray) -> dict[str, float]:
    """run_evals on the first 2 + 2 batches of 32 held-out rows, the rows the card's figures start with."""
    dataset = Dataset.from_dict({"input_ids": heldout_tokens[:128].astype(np.int64).tolist()})
    store = ActivationsStore.from_sae(model, sae, dataset=dataset, context_size=128, streaming=False)
    eval_config = EvalConfig(
        batch_size_prompts=32,
        n_eval_reconstruction_batches=2,
        n_eval_sparsity_variance_batches=2,
        compute_kl=True,
        compute_ce_loss=True,
        compute_sparsity_metrics=True,
        compute_variance_metrics=True,
    )
    with torch.no_grad():
        metrics, _ = run_evals(sae, store, model, ActivationScaler(), eval_config, exclude_special_tokens=True)
    return {
        "l0": metrics["sparsity"]["l0"],
        "explained_variance": metrics["reconstruction_quality"]["explained_variance"],
        "ce_loss_score": metrics["model_performance_preservation"]["ce_loss_score"],
        "kl_div_with_sae": metrics["model_behavior_preservation"]["kl_div_with_sae"],
    }


def test_quick_run_evals_matches_the_card(
    model: HookedTransformer, heldout_tokens: np.ndarray, card_figures: dict[str, Any]
) -> None:
    release, sae_id = "demo-res", "blocks.2.hook_resid_pre"
    quick = quick_run_evals(model, load_sae(release, sae_id), heldout_tokens)
    card = card_figures["saes"][release][sae_id]
    for metric, tolerance in CARD_TOLERANCE.items():
        assert quick[metric] == pytest.approx(card[metric], abs=tolerance), metric


def test_card_figures_meet_the_targets(card_figures: dict[str, Any]) -> None:
    """The standard residual SAEs were tuned to EV >= 0.8 and CE loss score >= 0.8 at L0 in [10, 100]."""
    for sae_id, figures in card_figures["saes"]["demo-res"].items():
        assert 10 <= figures["l0"] <= 100, sae_id
        assert figures["explained_variance"] >= 0.8, sae_id
        assert figures["ce_loss_score"] >= 0.8, sae_id
