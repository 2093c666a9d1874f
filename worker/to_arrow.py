"""Turn the engine's tensors into Arrow tables with the store's record schemas."""

from __future__ import annotations

from collections.abc import Sequence
from weakref import WeakKeyDictionary

import numpy as np
import pyarrow as pa
from jaxtyping import Bool, Float, Int
from torch import Tensor

from schema.records import AMPLIFICATION_SCHEMA, INTERVENTION_SCHEMA, TOKEN_SCHEMA


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()


def _nullable(values: np.ndarray, missing: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.array(values, mask=missing, type=type_)


_TEXTS: WeakKeyDictionary[object, dict[int, str]] = WeakKeyDictionary()


def token_texts(tokenizer: object, ids: np.ndarray) -> list[str]:
    """Decoded text of each token id, memoised per tokenizer ("<id>" for a model without one)."""
    if tokenizer is None:
        return [f"<{int(i)}>" for i in ids]
    cache = _TEXTS.setdefault(tokenizer, {})
    missing = [int(i) for i in np.unique(ids) if int(i) not in cache]
    for i, text in zip(missing, tokenizer.batch_decode([[i] for i in missing]), strict=True):  # type: ignore[attr-defined]
        cache[i] = text
    return [cache[int(i)] for i in ids]


def token_table(
    tokenizer: object,
    sequence_ids: Int[Tensor, " batch"],
    recorded: Int[Tensor, " rec"],
    token_ids: Int[Tensor, "batch rec"],
    next_tokens: Int[Tensor, "batch rec"],
    clean_loss: Float[Tensor, "batch rec"],
    intervened: Bool[Tensor, "batch rec"],
    token_metrics: dict[str, Float[Tensor, "batch rec"]],
) -> pa.Table:
    """One row per (sequence, recorded position); token metrics are null where not intervened."""
    batch, rec = token_ids.shape
    ids, nxt, hit = _numpy(token_ids).ravel(), _numpy(next_tokens).ravel(), _numpy(intervened).ravel()
    columns = {
        "sequence": pa.array(np.repeat(_numpy(sequence_ids), rec), pa.int32()),
        "position": pa.array(np.tile(_numpy(recorded), batch), pa.int16()),
        "token_id": pa.array(ids, pa.int32()),
        "token_text": pa.array(token_texts(tokenizer, ids), pa.string()),
        "next_token_id": _nullable(nxt, nxt < 0, pa.int32()),
        "clean_loss": _nullable(_numpy(clean_loss).ravel(), nxt < 0, pa.float32()),
        "intervened": pa.array(hit, pa.bool_()),
    }
    for name, values in token_metrics.items():
        type_ = TOKEN_SCHEMA.field(name).type
        columns[name] = _nullable(_numpy(values).ravel().astype(type_.to_pandas_dtype()), ~hit, type_)
    return pa.table(columns, schema=TOKEN_SCHEMA)


def intervention_table(
    variants: Sequence[tuple[str, int]],
    sequence_ids: Int[Tensor, " batch"],
    recorded: Int[Tensor, " rec"],
    counted: Bool[Tensor, "batch rec"],
    kl: Float[Tensor, "variants batch rec"],
    loss: Float[Tensor, "variants batch rec"],
    clean_loss: Float[Tensor, "batch rec"],
) -> pa.Table:
    """One row per (variant, sequence, recorded position) where the position is counted."""
    b_idx, r_idx = (_numpy(i) for i in counted.nonzero(as_tuple=True))
    n_variants, n_rows = len(variants), len(b_idx)
    loss_rows = _numpy(loss)[:, b_idx, r_idx].ravel()  # variant-major, like `variants`
    delta = loss_rows - np.tile(_numpy(clean_loss)[b_idx, r_idx], n_variants)
    names = pa.array([name for name, _ in variants], pa.string())
    columns = {
        "sequence": pa.array(np.tile(_numpy(sequence_ids)[b_idx], n_variants), pa.int32()),
        "position": pa.array(np.tile(_numpy(recorded)[r_idx], n_variants), pa.int16()),
        "intervention": names.take(pa.array(np.repeat(np.arange(n_variants), n_rows))),
        "sample": pa.array(np.repeat([k for _, k in variants], n_rows), pa.int32()),
        "kl": pa.array(_numpy(kl)[:, b_idx, r_idx].ravel(), pa.float32()),
        "loss": _nullable(loss_rows, np.isnan(loss_rows), pa.float32()),
        "loss_delta": _nullable(delta, np.isnan(delta), pa.float32()),
    }
    return pa.table(columns, schema=INTERVENTION_SCHEMA)


def amplification_table(
    names: Sequence[str],
    sequence_ids: Int[Tensor, " batch"],
    layers: range,
    n: Int[Tensor, "names batch"],
    r_sum: Float[Tensor, "layers names batch"],
    r_sq_sum: Float[Tensor, "layers names batch"],
) -> pa.Table:
    """One row per (sequence, intervention, layer) with n > 0: the sums of the amplification r."""
    counts = np.broadcast_to(_numpy(n)[None], r_sum.shape)  # (L, I, B)
    l_idx, i_idx, b_idx = np.nonzero(counts > 0)
    columns = {
        "sequence": pa.array(_numpy(sequence_ids)[b_idx], pa.int32()),
        "intervention": pa.array(names, pa.string()).take(pa.array(i_idx)),
        "layer": pa.array(np.asarray(layers)[l_idx], pa.int32()),
        "n": pa.array(counts[l_idx, i_idx, b_idx], pa.int64()),
        "r_sum": pa.array(r_sum.detach().cpu().numpy()[l_idx, i_idx, b_idx], pa.float64()),
        "r_sq_sum": pa.array(r_sq_sum.detach().cpu().numpy()[l_idx, i_idx, b_idx], pa.float64()),
    }
    return pa.table(columns, schema=AMPLIFICATION_SCHEMA)
