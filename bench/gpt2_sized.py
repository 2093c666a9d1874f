"""Random-weight assets of GPT-2 small's shapes (or a 256k vocabulary), for timing the engine offline.

Writes, under --out (default .work/gpt2-sized): a saegap model directory with GPT-2 small's
configuration (12 layers, d_model 768, 12 heads, d_mlp 3072, vocabulary 50257) and random
weights, the demo tokenizer (its ids are valid GPT-2-sized ids), a standard SAE (8x, 6144
latents, random weights) on each chosen `hook_resid_pre`, and the demo model's held-out tokens.
Timings depend on shapes only, so these stand in for gpt2-small + gpt2-small-res-jb.
`--shape vocab256k` writes a 4-layer model with d_model 64 and a 256,000-token vocabulary
(Gemma-2's size) instead, for the engine's peak memory at that vocabulary:

    .venv/bin/python -m bench.gpt2_sized --layers 6
    .venv/bin/python bench/engine.py --model .work/gpt2-sized/model --sae .work/gpt2-sized/blocks.6.hook_resid_pre \
        --tokens .work/gpt2-sized/tokens.npy --sequences 4 --per-shard 4 --repeats 3
    .venv/bin/python -m bench.gpt2_sized --shape vocab256k --out .work/vocab-256k --layers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sae_lens import StandardSAE, StandardSAEConfig
from sae_lens.saes.sae import SAEMetadata
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from worker.loading import load_token_set, models_dir, registry

log = logging.getLogger("bench.gpt2_sized")

GPT2_SMALL = dict(
    n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024,
    act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard", default_prepend_bos=True,
    original_architecture="GPT2LMHeadModel", seed=0,
)  # fmt: skip
VOCAB_256K = dict(GPT2_SMALL, n_layers=4, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=256_000)
SHAPES = {"gpt2": GPT2_SMALL, "vocab256k": VOCAB_256K}
EXPANSION = 8


def write_model(out: Path, config: dict[str, Any]) -> Path:
    """config.json, model.safetensors (random init) and the demo tokenizer, in saegap's model-dir format."""
    model_dir = out / "model"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2))
    model = HookedTransformer(HookedTransformerConfig(**config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(model_dir / "model.safetensors"))
    demo_model_dir = models_dir() / registry()["models"]["demo"]["path"]
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(demo_model_dir / name, model_dir / name)
    return model_dir


def write_sae(out: Path, model_dir: Path, layer: int, d_model: int) -> Path:
    """A standard ReLU SAE (random weights) reading blocks.<layer>.hook_resid_pre."""
    torch.manual_seed(layer)
    hook = f"blocks.{layer}.hook_resid_pre"
    metadata = SAEMetadata(hook_name=hook, model_name=str(model_dir), hook_head_index=None)
    sae = StandardSAE(StandardSAEConfig(d_in=d_model, d_sae=EXPANSION * d_model, metadata=metadata))
    sae.save_model(out / hook)
    return out / hook


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".work/gpt2-sized"))
    parser.add_argument("--layers", type=int, nargs="+", default=[6], help="hook_resid_pre layers to give an SAE")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shutil.rmtree(args.out, ignore_errors=True)
    config = SHAPES[args.shape]
    model_dir = write_model(args.out, config)
    saes = [write_sae(args.out, model_dir, layer, int(config["d_model"])) for layer in args.layers]
    np.save(args.out / "tokens.npy", load_token_set("demo")[:256])
    log.info("model %s, SAEs %s, tokens %s", model_dir, [str(p) for p in saes], args.out / "tokens.npy")


if __name__ == "__main__":
    main()
