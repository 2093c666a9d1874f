"""Hand-made engine tables (schema.records) and run metadata for the store tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from schema.records import INTERVENTION_SCHEMA, TOKEN_SCHEMA

VERSIONS = {"torch": "test", "transformer_lens": "test", "sae_lens": "test", "saegap": "test"}


def run_meta(layer: int) -> dict[str, Any]:
    return {
        "model": "tiny", "sae": f"tiny-res/blocks.{layer}", "architecture": "standard",
        "hook_name": f"blocks.{layer}.hook_resid_pre", "hook_point": "resid_pre", "layer": layer,
        "scope": "all_tokens", "d_in": 16, "d_sae": 64,
    }  # fmt: skip


def synthetic_shard(
    seq_start: int, seq_end: int, positions: int, interventions: tuple[str, ...], salt: float = 0.0
) -> tuple[pa.Table, pa.Table]:
    """Engine tables for sequences [seq_start, seq_end) x positions; kl encodes (sequence, position, salt)."""
    sequence = np.repeat(np.arange(seq_start, seq_end, dtype=np.int32), positions)  # (S * P,)
    position = np.tile(np.arange(positions, dtype=np.int16), seq_end - seq_start)  # (S * P,)
    n = len(sequence)
    tokens = pa.table(
        {
            "sequence": sequence, "position": position, "token_id": (sequence * 7 + position) % 50,
            "token_text": [f"t{i}" for i in range(n)], "next_token_id": np.ones(n, np.int32),
            "clean_loss": np.full(n, 2.0, np.float32), "intervened": np.ones(n, bool),
            "norm": np.ones(n, np.float32), "sae_norm": np.ones(n, np.float32), "eps": np.ones(n, np.float32),
            "cos_sim": np.ones(n, np.float32), "l0": np.ones(n, np.int32), "l1": np.ones(n, np.float32),
        },
        schema=TOKEN_SCHEMA,
    )  # fmt: skip
    k = len(interventions)
    kl = (np.repeat(sequence * 1000 + position, k) + salt).astype(np.float32)  # (S * P * K,)
    rows = pa.table(
        {
            "sequence": np.repeat(sequence, k), "position": np.repeat(position, k),
            "intervention": list(interventions) * n, "sample": np.zeros(n * k, np.int32), "kl": kl,
            "loss": kl + 2, "loss_delta": kl,
        },
        schema=INTERVENTION_SCHEMA,
    )  # fmt: skip
    return tokens, rows
