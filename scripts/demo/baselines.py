"""Held-out next-token CE of the demo model next to unigram and add-k bigram baselines.

Baselines are fitted on the training split only; k is chosen on a 10% validation slice of the
training rows, then the bigram is refitted on all training rows. Targets are tokens[:, 1:] of every
held-out row (the model's own loss convention). Writes models/demo/baselines.json.
"""

import numpy as np
import torch
import torch.nn.functional as F

from scripts.demo.common import (
    BASELINES_PATH,
    HELDOUT_TOKENS_PATH,
    SEED,
    TORCH_THREADS,
    TRAIN_TOKENS_PATH,
    VOCAB_SIZE,
    setup_logging,
    write_json,
)
from scripts.demo.load_demo import load_demo_model

ADD_K_CANDIDATES = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
EVAL_BATCH_ROWS = 64

log = setup_logging("baselines")


def bigram_counts(rows: np.ndarray) -> np.ndarray:
    """counts[prev, next] over consecutive positions of each row, shape (V, V)."""
    flat_index = rows[:, :-1].astype(np.int64) * VOCAB_SIZE + rows[:, 1:].astype(np.int64)  # (N, P-1)
    return np.bincount(flat_index.ravel(), minlength=VOCAB_SIZE * VOCAB_SIZE).reshape(VOCAB_SIZE, VOCAB_SIZE)


def bigram_ce(counts: np.ndarray, add_k: float, rows: np.ndarray) -> float:
    """Mean -log p(next | prev) with p = (count + k) / (row total + k V)."""
    log_probs = np.log(counts + add_k) - np.log(counts.sum(axis=1, keepdims=True) + add_k * VOCAB_SIZE)  # (V, V)
    return float(-log_probs[rows[:, :-1], rows[:, 1:]].mean())


def unigram_ce(train_rows: np.ndarray, rows: np.ndarray) -> float:
    """Mean -log p(token) with add-one smoothing of the training-target counts."""
    counts = np.bincount(train_rows[:, 1:].ravel(), minlength=VOCAB_SIZE) + 1.0
    log_probs = np.log(counts) - np.log(counts.sum())
    return float(-log_probs[rows[:, 1:]].mean())


def choose_add_k(train_rows: np.ndarray) -> float:
    """k with the lowest CE on a seeded 10% validation slice of the training rows."""
    order = np.random.default_rng(SEED).permutation(len(train_rows))
    n_val = len(train_rows) // 10
    fit_counts = bigram_counts(train_rows[order[n_val:]])
    val_rows = train_rows[order[:n_val]]
    scores = {k: bigram_ce(fit_counts, k, val_rows) for k in ADD_K_CANDIDATES}
    log.info("bigram validation CE by k: %s", scores)
    return min(scores, key=scores.__getitem__)


@torch.no_grad()
def model_ce(rows: np.ndarray) -> float:
    """Mean next-token CE of the shipped model over all targets tokens[:, 1:]."""
    model = load_demo_model()
    total, count = 0.0, 0
    for start in range(0, len(rows), EVAL_BATCH_ROWS):
        tokens = torch.from_numpy(rows[start : start + EVAL_BATCH_ROWS].astype(np.int64))
        logits = model(tokens, return_type="logits")  # (B, P, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten(), reduction="sum")
        total, count = total + loss.item(), count + tokens[:, 1:].numel()
    return total / count


def main() -> None:
    torch.set_num_threads(TORCH_THREADS)
    train_rows, heldout_rows = np.load(TRAIN_TOKENS_PATH), np.load(HELDOUT_TOKENS_PATH)
    add_k = choose_add_k(train_rows)
    figures = {
        "n_heldout_sequences": len(heldout_rows),
        "n_heldout_targets": int(heldout_rows[:, 1:].size),
        "model_ce": model_ce(heldout_rows),
        "unigram_ce": unigram_ce(train_rows, heldout_rows),
        "bigram_ce": bigram_ce(bigram_counts(train_rows), add_k, heldout_rows),
        "bigram_add_k": add_k,
    }
    log.info("held-out CE: %s", figures)
    write_json(BASELINES_PATH, figures)


if __name__ == "__main__":
    main()
