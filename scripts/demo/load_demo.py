"""Load the shipped demo model exactly as worker/loading.py does (the documented recipe)."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from scripts.demo.common import MODEL_DIR


def load_demo_model(model_dir: Path = MODEL_DIR) -> HookedTransformer:
    """PreTrainedTokenizerFast + HookedTransformer(HookedTransformerConfig(**config.json)) + state dict; eval mode."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
    config = HookedTransformerConfig(**json.loads((model_dir / "config.json").read_text()))
    model = HookedTransformer(config, tokenizer=tokenizer)
    state = {name: tensor.to(torch.float32) for name, tensor in load_file(model_dir / "model.safetensors").items()}
    model.load_state_dict(state)
    return model.eval()
