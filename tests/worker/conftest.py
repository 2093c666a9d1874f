"""Small random models and SAEs built in the test: fast, offline, fully seeded."""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import save_file
from tokenizers import Tokenizer, models
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from schema.spec import SEED_INTERVENTION_NAMES, AllTokenScope
from worker.engine import EngineSettings
from worker.interventions import INTERVENTIONS

VOCAB = 64
CONTEXT = 24
BOS = 0


@functools.cache
def _tokenizer_dir() -> str:
    """TransformerLens reloads a model's tokenizer by path, so the tiny one lives on disk."""
    vocab = {"<|endoftext|>": BOS} | {f"t{i}": i for i in range(1, VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|endoftext|>"))
    special = "<|endoftext|>"
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=special, eos_token=special, pad_token=special
    )
    path = tempfile.mkdtemp(prefix="saegap-tiny-tokenizer-")
    tokenizer.save_pretrained(path)
    return path


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(_tokenizer_dir())


def tiny_model(seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=VOCAB, n_ctx=CONTEXT,
        act_fn="gelu_new", normalization_type="LN", seed=seed, default_prepend_bos=True,
    )  # fmt: skip
    model = HookedTransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="right")
    with torch.no_grad():  # random init is tiny; scale it up so interventions move the logits visibly
        for p in model.parameters():
            p.mul_(2.0)
    return model.eval()


def tiny_sae(hook_name: str, d_in: int, seed: int = 0, d_sae: int = 128) -> StandardSAE:
    torch.manual_seed(seed)
    metadata = SAEMetadata(hook_name=hook_name, model_name="tiny", hook_head_index=None)
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=metadata))
    with torch.no_grad():
        sae.b_enc.normal_(0.0, 0.5)  # some latents on, some off
    return sae.eval()


def random_tokens(batch: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, VOCAB, (batch, CONTEXT), generator=g)
    tokens[:, 0] = BOS
    return tokens


def settings(**overrides: object) -> EngineSettings:
    base = dict(
        scope=AllTokenScope(),
        interventions={name: INTERVENTIONS[name] for name in SEED_INTERVENTION_NAMES},
        samples=1,
        seed=0,
        max_tokens_per_pass=4096,
        special_token_ids=(BOS,),
    )
    return EngineSettings(**(base | overrides))


@pytest.fixture(scope="session")
def model() -> HookedTransformer:
    return tiny_model()


TINY_CONFIG = dict(
    n_layers=3, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=VOCAB, n_ctx=CONTEXT,
    act_fn="gelu_new", normalization_type="LN", default_prepend_bos=True,
)  # fmt: skip
TINY_HOOKS = ("blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre", "blocks.1.attn.hook_z")


def save_tiny_assets(root: Path, n_sequences: int = 16) -> dict[str, str]:
    """A local model directory, one SAE directory per hook and a token .npy, in saegap's formats.

    Returns {"model": dir, "tokens": npy, <hook name>: sae dir}.
    """
    model = tiny_model()
    model_dir = root / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps(TINY_CONFIG))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_dir / "model.safetensors"))
    model.tokenizer.save_pretrained(str(model_dir))
    paths = {"model": str(model_dir)}
    for i, hook in enumerate(TINY_HOOKS):
        width = 32
        sae = tiny_sae(hook, width, seed=i)
        sae.cfg.metadata.model_name = str(model_dir)
        sae.save_model(root / f"sae-{i}")
        paths[hook] = str(root / f"sae-{i}")
    np.save(root / "tokens.npy", random_tokens(n_sequences, seed=5).numpy().astype(np.int32))
    paths["tokens"] = str(root / "tokens.npy")
    return paths


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return save_tiny_assets(tmp_path_factory.mktemp("tiny-assets"))
