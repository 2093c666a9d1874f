"""The bundled names (models/registry.json) and token-set lookup without loading a model library.

Torch-free, so the CLI can size a job (worker/size.py) before anything heavy is imported.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from worker.errors import BadInput, one_line


def models_dir() -> Path:
    """Where bundled models live: $SAEGAP_MODELS, else the repository's models/."""
    return Path(os.environ.get("SAEGAP_MODELS", Path(__file__).resolve().parents[1] / "models"))


@cache
def _registry(root: Path) -> dict[str, Any]:
    path = root / "registry.json"
    return json.loads(path.read_text()) if path.exists() else {"models": {}, "releases": {}, "token_sets": {}}


def registry() -> dict[str, Any]:
    """The bundled names: {"models": ..., "releases": ..., "token_sets": ...}."""
    return _registry(models_dir())


def token_set_path(name: str) -> Path:
    """The .npy file of a bundled token set or a path; BadInput when there is no such file."""
    bundled = registry()["token_sets"]
    path = models_dir() / bundled[name]["path"] if name in bundled else Path(name)
    if path.is_dir():
        raise BadInput(f"token set {name!r} is a directory; give a .npy file of token ids")
    if not path.exists():
        raise BadInput(f"unknown token set {name!r}: not a bundled name ({', '.join(bundled)}) or a .npy file")
    return path


def open_token_set(name: str, mmap: bool = False) -> np.ndarray:
    """A token set's array, checked: a .npy (no pickles) of integer ids, shape (sequences >= 1, positions >= 2)."""
    path = token_set_path(name)
    try:
        tokens = np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (ValueError, OSError, EOFError) as error:  # pickled, text, truncated, unreadable
        raise BadInput(f"token set {name!r} is not a readable .npy array ({one_line(error)})") from error
    if not isinstance(tokens, np.ndarray):  # an .npz archive
        raise BadInput(f"token set {name!r} is an .npz archive; save one array with numpy.save")
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise BadInput(
            f"token set {name!r} must be a 2-D integer array of at least 1 sequence x 2 positions, "
            f"got shape {tokens.shape} {tokens.dtype}"
        )
    return tokens
