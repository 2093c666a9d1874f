"""Sequence-level bootstrap of means from per-sequence sums and counts.

Tokens of one sequence are correlated (the same context feeds every position), so the
resampling unit is the sequence: SQL aggregates each sequence to (sum, count) per
group, and every bootstrap replicate re-weights whole sequences. All groups share the
replicates' sequence weights, so ratios between groups (an intervention over
eps_random) are paired, as they are in the data.
"""

from __future__ import annotations

import warnings

import numpy as np
from jaxtyping import Float

# Replicates per matrix product; bounds the (chunk, n_sequences) weight block in memory.
_CHUNK = 250


def resample_weights(n_sequences: int, n_boot: int, rng: np.random.Generator) -> Float[np.ndarray, "boot seq"]:
    """How often each sequence is drawn in each replicate (rows sum to n_sequences)."""
    draws = rng.integers(0, n_sequences, size=(n_boot, n_sequences))  # (B, S) sequence indices
    offsets = (np.arange(n_boot) * n_sequences)[:, None]  # (B, 1): one bincount for all replicates
    counts = np.bincount((draws + offsets).ravel(), minlength=n_boot * n_sequences)
    return counts.reshape(n_boot, n_sequences).astype(np.float64)  # (B, S)


def bootstrap_means(
    sums: Float[np.ndarray, "seq group"],
    counts: Float[np.ndarray, "seq group"],
    n_boot: int,
    seed: int,
) -> Float[np.ndarray, "boot group"]:
    """Replicate means sum(w*sums)/sum(w*counts) per group; NaN where a replicate drew no count."""
    rng = np.random.default_rng(seed)
    n_sequences = sums.shape[0]
    # (S, U) and (2G,): one product gives sums and counts; equal columns (the counts of every
    # intervention of a run, usually) are multiplied once
    stacked, column_of = distinct_columns(np.concatenate([sums, counts], axis=1))
    replicates = []
    for start in range(0, n_boot, _CHUNK):
        weights = resample_weights(n_sequences, min(_CHUNK, n_boot - start), rng)  # (b, S)
        replicates.append(weights @ stacked)  # (b, U)
    totals = np.concatenate(replicates, axis=0)[:, column_of]  # (B, 2G)
    n_groups = sums.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return totals[:, :n_groups] / totals[:, n_groups:]  # (B, G)


def distinct_columns(matrix: Float[np.ndarray, "row col"]) -> tuple[Float[np.ndarray, "row distinct"], np.ndarray]:
    """The matrix's distinct columns (first occurrences, in order) and, per column, its index among them:
    distinct[:, index] == matrix, bit for bit."""
    by_column = np.ascontiguousarray(matrix.T)  # (C, R)
    first: dict[bytes, int] = {}
    index = np.array([first.setdefault(column.tobytes(), len(first)) for column in by_column], dtype=np.intp)
    keep = np.unique(index, return_index=True)[1]  # (U,) first column of each distinct one
    return matrix[:, keep], index


def percentile_interval(
    replicates: Float[np.ndarray, "boot group"], confidence: float
) -> tuple[Float[np.ndarray, " group"], Float[np.ndarray, " group"]]:
    """Percentile bootstrap interval per group, ignoring NaN replicates."""
    tail = (1.0 - confidence) / 2.0 * 100.0
    with warnings.catch_warnings():  # a group with no data in any replicate: NaN bounds
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(replicates, [tail, 100.0 - tail], axis=0)
    return low, high
