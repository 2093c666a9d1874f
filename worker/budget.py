"""Block sizes from a memory budget in bytes (JobSpec.memory_budget_bytes; docs/engine.md).

The engine's working memory for one batch is, besides the model and SAE weights:

- the clean cache: each evaluated hook's activation and its block's input residual, and the
  resid_post of every later block at the recorded positions (the amplification's reference);
- the clean next-token probabilities of one block's sequences at the recorded positions
  (float32, sequences x recorded x vocabulary), shared by every target and variant;
- one patched block: variants x sequences rows run through the model's blocks (their
  activations, attention scores and, in single-token scope, the clean keys and values of
  the positions before P copied per row);
- the metrics of that block: its logits over one vocabulary chunk (float32), turned into
  KL and loss in place;
- every variant's replacement vectors for the batch, when they fit in REPLACEMENT_SHARE.

The constants below are per-token counts of live tensors, read off TransformerLens's
block (q, k, v, z, layer-norm outputs, residuals; gelu's temporaries; scores, mask and
pattern) and checked against peak RSS in bench/engine.py --memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from worker.errors import BadInput

RESID_COPIES = 12  # d_model-wide tensors alive in one block
MLP_COPIES = 4  # d_mlp-wide
SCORE_COPIES = 4  # n_heads x keys (scores, causal mask applied, softmax, NaN-cleaned pattern)
METRIC_COPIES = 2  # a chunk of logits and its float32 copy (bfloat16 models) or exp temporary
CLEAN_TEMP_COPIES = 2  # exp and product temporaries of one sequence while clean probabilities are made
TARGET_ROWS_TOKENS = 16_384  # a block this many tokens long is as fast per token as a bigger one
MIN_VOCAB_CHUNK = 256
# A chunk of logits bigger than this is no faster per element; on CPU, tensors above glibc's
# mmap threshold (32 MiB) are fresh pages, faulted in again at every chunk.
CHUNK_TENSOR_BYTES = 32 * 2**20
FLOAT = 4
# Every variant's replacement vectors for the whole batch are made at once (one call of each
# formula per batch, as many small calls cost more than their arithmetic) when they take at
# most this share of the budget, which plan_blocks leaves free; else block by block.
REPLACEMENT_SHARE = 1 / 8


@dataclass(frozen=True)
class BatchShape:
    """What the memory of one batch depends on."""

    sequences: int  # B
    length: int  # positions in the clean pass
    run: int  # positions run per patched row (single-token with reused keys: W + 1)
    keys: int  # keys each patched query attends over (positions before the run + run)
    recorded: int  # recorded positions per sequence
    variants: int  # interventions x samples
    targets: int  # SAEs evaluated on the batch
    width: int  # widest hook activation (d_model, or n_heads x d_head for hook_z)
    d_model: int
    d_mlp: int
    n_heads: int
    d_vocab: int
    act_bytes: int  # the model's dtype
    later_layers: int = 0  # blocks from the first hook's on, whose clean resid_post is kept at the recorded positions

    def token_bytes(self, keys: int) -> int:
        """Forward working memory of one token in one block attending over `keys` positions."""
        attention = SCORE_COPIES * self.n_heads * keys
        return self.act_bytes * (RESID_COPIES * self.d_model + MLP_COPIES * self.d_mlp + attention)

    def row_bytes(self, vocab_chunk: int) -> int:
        """One patched row (variant x sequence): forward, patched inputs, prefix keys/values, metrics."""
        forward = self.run * self.token_bytes(self.keys)
        inputs = self.run * (2 * self.width + self.d_model) * self.act_bytes
        prefix = 2 * self.keys * self.d_model * self.act_bytes
        metrics = self.recorded * (METRIC_COPIES * vocab_chunk + 2 * self.d_model) * FLOAT
        amplification = self.recorded * self.later_layers * FLOAT  # r of each later block
        return forward + inputs + prefix + metrics + amplification

    def sequence_bytes(self) -> int:
        """The clean log-probabilities and probabilities of one sequence at its recorded positions."""
        return 2 * self.recorded * self.d_vocab * FLOAT

    def fixed_bytes(self) -> int:
        """The clean cache (hook activations, input residuals, final residual) and clean-probability temporaries."""
        cache = self.sequences * self.length * (self.targets * (self.width + self.d_model) + self.d_model)
        later = self.sequences * self.recorded * self.later_layers * (self.d_model * self.act_bytes + FLOAT)  # + norms
        temps = CLEAN_TEMP_COPIES * self.recorded * self.d_vocab * FLOAT
        return cache * self.act_bytes + later + temps


@dataclass(frozen=True)
class BlockPlan:
    seqs: int  # sequences per block (their clean probabilities are held together)
    variants: int  # variants per block
    vocab_chunk: int  # vocabulary columns per metrics step (d_vocab: not chunked)
    clean_seqs: int  # sequences per clean forward pass


def plan_blocks(shape: BatchShape, budget: int, max_tokens_per_pass: int | None = None) -> BlockPlan:
    """The biggest blocks (up to TARGET_ROWS_TOKENS tokens) whose peak memory fits `budget` bytes.

    The vocabulary is chunked before a block is made smaller, down to a sixteenth of it;
    below that, blocks shrink first. BadInput when one row with the smallest chunk does not fit.
    """
    avail = int(budget * (1 - REPLACEMENT_SHARE)) - shape.fixed_bytes()
    cap_tokens = min(TARGET_ROWS_TOKENS, max_tokens_per_pass or TARGET_ROWS_TOKENS)
    target = min(shape.variants * shape.sequences, max(1, cap_tokens // shape.run))
    seqs = min(shape.sequences, math.ceil(target / shape.variants))
    variants = min(shape.variants, max(1, target // seqs))
    floor = max(MIN_VOCAB_CHUNK, math.ceil(shape.d_vocab / 16))
    plan = _fit(shape, avail, seqs, variants, floor) or _fit(shape, avail, seqs, variants, MIN_VOCAB_CHUNK)
    if plan is None:
        need = shape.fixed_bytes() + shape.sequence_bytes() + shape.row_bytes(min(shape.d_vocab, MIN_VOCAB_CHUNK))
        raise BadInput(
            f"memory_budget_bytes={budget} is too small for this batch ({shape.sequences} sequences x "
            f"{shape.length} positions, vocabulary {shape.d_vocab}, d_model {shape.d_model}): it needs at "
            f"least {need} bytes; raise the budget or lower sequences_per_shard"
        )
    return plan


def _fit(shape: BatchShape, avail: int, seqs: int, variants: int, floor: int) -> BlockPlan | None:
    """Shrink vocabulary chunk (to `floor`), then variants, then sequences, until a block fits; then balance."""
    while True:
        chunk = _fast_chunk(shape, seqs * variants)
        while True:
            if seqs * shape.sequence_bytes() + seqs * variants * shape.row_bytes(chunk) <= avail:
                return BlockPlan(
                    _even(shape.sequences, seqs), _even(shape.variants, variants), _even(shape.d_vocab, chunk),
                    _clean_seqs(shape, avail),
                )  # fmt: skip
            if chunk <= floor:
                break
            chunk = max(floor, chunk // 2)
        if variants > 1:
            variants //= 2
        elif seqs > 1:
            seqs //= 2
        else:
            return None


def _fast_chunk(shape: BatchShape, rows: int) -> int:
    """The vocabulary chunk whose float32 logits for `rows` rows stay within CHUNK_TENSOR_BYTES."""
    per_column = rows * shape.recorded * FLOAT
    return min(shape.d_vocab, max(MIN_VOCAB_CHUNK, CHUNK_TENSOR_BYTES // per_column))


def _even(total: int, most: int) -> int:
    """The same number of pieces as blocks of `most`, of equal size: no small last block."""
    return math.ceil(total / math.ceil(total / most))


def _clean_seqs(shape: BatchShape, avail: int) -> int:
    """Sequences per clean pass: its forward activations within the budget left by the cache."""
    per_sequence = shape.length * shape.token_bytes(shape.length)
    return max(1, min(shape.sequences, avail // max(per_sequence, 1)))
