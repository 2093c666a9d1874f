"""Objects a Python caller hands over instead of names: a loaded model, in-memory SAEs, a token tensor.

`saegap.evaluate` (saegap/api.py) turns each into what a JobSpec names. A loaded
HookedTransformer is registered under a `memory:` name that worker.loading.load_model looks up
first (it lives only in this process, so such a job runs here, never on a queue). An SAE is saved
with SAELens's own `save_model` and a token array with numpy, both under the job's data dir in a
folder named by the content's hash: the job's spec then names files that any later reader, resume
or rerun can open, and the run sees exactly the SAE a `saegap evaluate --sae DIR` would.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from sae_lens import SAE
from transformer_lens import HookedTransformer

from worker.errors import BadInput

MEMORY_PREFIX = "memory:"
_MODELS: dict[str, HookedTransformer] = {}  # memory:<name> -> the caller's model
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def is_model(value: object) -> bool:
    return isinstance(value, HookedTransformer)


def is_sae(value: object) -> bool:
    return isinstance(value, SAE)


def is_token_array(value: object) -> bool:
    return isinstance(value, (torch.Tensor, np.ndarray))


def register_model(model: HookedTransformer) -> str:
    """A name load_model resolves to `model` in this process (`memory:<cfg.model_name>@<id>`)."""
    name = f"{MEMORY_PREFIX}{model.cfg.model_name}@{id(model):x}"
    _MODELS[name] = model
    return name


def unregister_model(name: str) -> None:
    _MODELS.pop(name, None)


def provided_model(name: str) -> HookedTransformer | None:
    """The registered model of a `memory:` name; BadInput for one this process no longer holds."""
    if not name.startswith(MEMORY_PREFIX):
        return None
    if name not in _MODELS:
        raise BadInput(f"model {name} was an in-memory model of another process; evaluate it from Python again")
    return _MODELS[name]


def model_placement(model: HookedTransformer) -> dict[str, str]:
    """The JobSpec device and dtype of a loaded model, so the job runs it where and as it is."""
    device = torch.device(model.cfg.device or "cpu").type
    if model.cfg.dtype not in _DTYPE_NAMES:
        runs = ", ".join(_DTYPE_NAMES.values())
        raise BadInput(f"the model's dtype {model.cfg.dtype} is not one saegap runs ({runs})")
    return {"device": device, "dtype": _DTYPE_NAMES[model.cfg.dtype]}


def save_sae(sae: SAE[Any], root: Path) -> Path:
    """Save `sae` (SAELens's save_model) to root/sae-<hash of its files>; the same SAE gives the same dir."""
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sae-", dir=root))
    sae.save_model(staging)
    return _move_by_hash(staging, root, "sae")


def save_tokens(tokens: Int[np.ndarray | torch.Tensor, "seq pos"], root: Path) -> Path:
    """Save a token array as root/tokens-<hash>.npy (int64), checked 2-D integer."""
    array = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise BadInput(f"tokens must be a 2-D integer array (sequences x positions), got {array.shape} {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"tokens-{hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()[:16]}.npy"
    if not path.exists():
        np.save(path, array)
    return path


def _move_by_hash(staging: Path, root: Path, prefix: str) -> Path:
    digest = hashlib.sha256()
    for item in sorted(staging.iterdir()):
        digest.update(item.name.encode() + item.read_bytes())
    final = root / f"{prefix}-{digest.hexdigest()[:16]}"
    if final.exists():
        shutil.rmtree(staging)
    else:
        staging.rename(final)
    return final
