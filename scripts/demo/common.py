"""Shared paths and settings of the demo-model build (scripts/demo/*).

Run the build steps from the repository root as modules, e.g.
`.venv/bin/python -m scripts.demo.prepare_data`; `scripts/demo/build.sh` runs them all.
"""

import json
import logging
import random
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_DIR = REPO_ROOT / ".work" / "demo"  # git-ignored: corpus-derived training data, logs
CORPUS_SOURCES = REPO_ROOT / ".work" / "corpus" / "root" / "usr" / "share" / "doc" / "python3.11" / "html" / "_sources"
MODELS_DIR = REPO_ROOT / "models"
MODEL_DIR = MODELS_DIR / "demo" / "model"
SAES_DIR = MODELS_DIR / "demo" / "saes"
HELDOUT_TOKENS_PATH = MODELS_DIR / "demo" / "tokens.npy"
TRAIN_TOKENS_PATH = WORK_DIR / "train_tokens.npy"
BASELINES_PATH = MODELS_DIR / "demo" / "baselines.json"
SAE_EVALS_PATH = MODELS_DIR / "demo" / "sae_evals.json"
REGISTRY_PATH = MODELS_DIR / "registry.json"

SEED = 1234
BOS_TOKEN = "<|endoftext|>"  # BOS, EOS and PAD, as in GPT-2
VOCAB_SIZE = 4096
SEQ_LEN = 128  # = n_ctx; every sequence starts with BOS
N_HELDOUT_SEQS = 4096
TORCH_THREADS = 2  # the build machine is shared

# HookedTransformerConfig kwargs; written verbatim to models/demo/model/config.json.
MODEL_CONFIG: dict[str, Any] = {
    "model_name": "demo",
    "n_layers": 4,
    "d_model": 128,
    "n_heads": 4,
    "d_head": 32,
    "d_mlp": 512,
    "d_vocab": VOCAB_SIZE,
    "n_ctx": SEQ_LEN,
    "act_fn": "gelu_new",
    "normalization_type": "LN",
    "positional_embedding_type": "standard",
    "default_prepend_bos": True,
    "original_architecture": "GPT2LMHeadModel",
    "seed": SEED,
}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so every build step is reproducible."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_logging(log_name: str) -> logging.Logger:
    """Log to stderr and to .work/demo/<log_name>.log."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    handlers: list[logging.Handler] = [logging.StreamHandler(), logging.FileHandler(WORK_DIR / f"{log_name}.log")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", handlers=handlers, force=True)
    return logging.getLogger(log_name)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")


class ReleaseSpec(BaseModel):
    """One SAE release of the demo model: one SAE per layer on `hook_template` (formatted with the layer)."""

    hook_template: str
    architecture: Literal["standard", "topk"]

    def hook_names(self, n_layers: int) -> list[str]:
        return [self.hook_template.format(layer=layer) for layer in range(n_layers)]


# The single list of shipped releases; the registry, training, evals and tests all read it.
RELEASES: dict[str, ReleaseSpec] = {
    "demo-res": ReleaseSpec(hook_template="blocks.{layer}.hook_resid_pre", architecture="standard"),
    "demo-res-topk": ReleaseSpec(hook_template="blocks.{layer}.hook_resid_pre", architecture="topk"),
    "demo-attn": ReleaseSpec(hook_template="blocks.{layer}.attn.hook_z", architecture="topk"),
}


def sae_dir(release: str, hook_name: str) -> Path:
    """SAE directory = <release path>/<sae_id>/, the sae_id being the hook name."""
    return SAES_DIR / release / hook_name
