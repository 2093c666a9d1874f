"""Train the demo GPT-2-style HookedTransformer on CPU (AdamW, warmup + cosine, fixed seed).

Reads .work/demo/train_tokens.npy (from prepare_data), writes models/demo/model/config.json and
model.safetensors. Never touches the held-out tokens.
"""

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Int
from safetensors.torch import save_file
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from scripts.demo.common import (
    MODEL_CONFIG,
    MODEL_DIR,
    SEED,
    TORCH_THREADS,
    TRAIN_TOKENS_PATH,
    seed_everything,
    setup_logging,
    write_json,
)

BATCH_SIZE = 32
N_STEPS = 800  # 0.45 s/step alone, ~2 s/step when the 2 shared cores are busy (measured)
WARMUP_STEPS = 60
PEAK_LR = 3e-3
FINAL_LR_FRACTION = 0.1
WEIGHT_DECAY = 0.1
GRAD_CLIP = 1.0
LOG_EVERY = 50

log = setup_logging("train_model")


def learning_rate(step: int) -> float:
    """Linear warmup to PEAK_LR, then cosine decay to FINAL_LR_FRACTION * PEAK_LR at N_STEPS."""
    if step < WARMUP_STEPS:
        return PEAK_LR * (step + 1) / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, N_STEPS - WARMUP_STEPS)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return PEAK_LR * (FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * cosine)


def next_token_loss(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> Tensor:
    """Mean CE of predicting tokens[:, 1:] (the BOS column is input only)."""
    logits = model(tokens, return_type="logits")  # (B, P, V)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten().long())


def batch_order(n_rows: int, n_steps: int, generator: np.random.Generator) -> np.ndarray:
    """Row indices for every step: concatenated seeded permutations (epochs), shape (n_steps, BATCH_SIZE)."""
    n_epochs = math.ceil(n_steps * BATCH_SIZE / n_rows)
    order = np.concatenate([generator.permutation(n_rows) for _ in range(n_epochs)])
    return order[: n_steps * BATCH_SIZE].reshape(n_steps, BATCH_SIZE)  # (S, B)


def build_optimizer(model: HookedTransformer) -> torch.optim.AdamW:
    """Weight decay on matrices only (not biases, LayerNorm weights)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=PEAK_LR, betas=(0.9, 0.95))


def train(model: HookedTransformer, train_tokens: torch.Tensor) -> None:
    optimizer = build_optimizer(model)
    order = batch_order(len(train_tokens), N_STEPS, np.random.default_rng(SEED))
    started = time.monotonic()
    for step in range(N_STEPS):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step)
        loss = next_token_loss(model, train_tokens[order[step]])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        if step % LOG_EVERY == 0 or step == N_STEPS - 1:
            log.info(
                "step %d loss %.4f lr %.2e elapsed %.0fs",
                step,
                loss.item(),
                learning_rate(step),
                time.monotonic() - started,
            )
    log.info("training wall time %.1fs for %d steps", time.monotonic() - started, N_STEPS)


def main() -> None:
    torch.set_num_threads(TORCH_THREADS)
    seed_everything(SEED)
    model = HookedTransformer(HookedTransformerConfig(**MODEL_CONFIG))
    train_tokens = torch.from_numpy(np.load(TRAIN_TOKENS_PATH).astype(np.int64))
    log.info(
        "params %d, train rows %d, tokens/step %d",
        sum(p.numel() for p in model.parameters()),
        len(train_tokens),
        BATCH_SIZE * train_tokens.shape[1],
    )
    train(model, train_tokens)
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    write_json(MODEL_DIR / "config.json", MODEL_CONFIG)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, MODEL_DIR / "model.safetensors")
    log.info("saved %s", MODEL_DIR)


if __name__ == "__main__":
    main()
