"""Arrow schemas of the per-token records: the contract between the engine and the store.

The engine (worker/) emits one `tokens` and one `interventions` table per run and
shard with exactly these columns; the store adds `run_id` and `shard_id` when it
writes them. docs/schema.md documents every column.
"""

from __future__ import annotations

import pyarrow as pa

# One row per (sequence, position) the run records.
TOKEN_SCHEMA = pa.schema(
    [
        pa.field("sequence", pa.int32(), nullable=False),  # index into the job's token set
        pa.field("position", pa.int16(), nullable=False),
        pa.field("token_id", pa.int32(), nullable=False),
        pa.field("token_text", pa.string(), nullable=False),
        pa.field("next_token_id", pa.int32()),  # null at the last position of the context
        pa.field("clean_loss", pa.float32()),  # -log P_clean(next token); null where next is null
        pa.field("intervened", pa.bool_(), nullable=False),
        # Null where the position was not intervened:
        pa.field("norm", pa.float32()),  # ||x||
        pa.field("sae_norm", pa.float32()),  # ||SAE(x)||
        pa.field("eps", pa.float32()),  # ||SAE(x) - x||
        pa.field("cos_sim", pa.float32()),  # cos(x, SAE(x))
        pa.field("l0", pa.int32()),  # active SAE latents
        pa.field("l1", pa.float32()),  # sum of |latent activations|
    ]
)

# One row per (sequence, position, intervention, sample) where the metric is counted.
INTERVENTION_SCHEMA = pa.schema(
    [
        pa.field("sequence", pa.int32(), nullable=False),
        pa.field("position", pa.int16(), nullable=False),
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),  # 0 for deterministic interventions
        pa.field("kl", pa.float32(), nullable=False),  # KL(P_clean || Q_intervened), nats
        pa.field("loss", pa.float32()),  # -log Q(next token); null where next is null
        pa.field("loss_delta", pa.float32()),  # loss - clean_loss
    ]
)

# One row per (sequence, intervention, later layer): sums over the counted recorded positions and all samples of
# r = ||h_l(patched) - h_l(clean)|| / ||h_l(clean)|| at blocks.{layer}.hook_resid_post (docs/method.md §9).
AMPLIFICATION_SCHEMA = pa.schema(
    [
        pa.field("sequence", pa.int32(), nullable=False),
        pa.field("intervention", pa.string(), nullable=False),
        pa.field("layer", pa.int32(), nullable=False),  # the block whose resid_post is measured: hook's .. last
        pa.field("n", pa.int64(), nullable=False),  # positions x samples summed
        pa.field("r_sum", pa.float64(), nullable=False),
        pa.field("r_sq_sum", pa.float64(), nullable=False),
    ]
)

# next_token_distributions' columns, one row per token in the union of the three top-k sets.
NEXT_TOKEN_SCHEMA = pa.schema(
    [("token_id", pa.int64()), ("token_text", pa.string()), ("logprob_clean", pa.float32()),
     ("logprob_sae", pa.float32()), ("logprob_eps_random", pa.float32()), ("rank", pa.int32())]
)  # fmt: skip
