"""Resolve and load models, SAEs and token sets the way SAELens users expect (docs/method.md §4).

Names resolve in this order: a bundled name from `models/registry.json` (the `demo`
model and its `demo-*` SAE releases, so `--model demo --sae demo-res/blocks.2.hook_resid_pre`
works offline), a local directory, then a TransformerLens model name / SAELens release.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from sae_lens import SAE
from safetensors.torch import load_file
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerFast

from worker.errors import BadInput, one_line
from worker.hooks import HookPoint
from worker.provided import MEMORY_PREFIX, provided_model
from worker.registry import models_dir, open_token_set, registry

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# SAELens normalisations whose inverse `SAE.decode` applies itself (or which need none).
_SELF_CONTAINED_NORMALISATIONS = ("none", "constant_norm_rescale", "layer_norm")


@dataclass(frozen=True)
class SaeRef:
    """One SAE: a registry/SAELens release and id, or a local directory."""

    name: str  # as the user wrote it, or release/sae_id when expanded from a release
    release: str | None
    sae_id: str | None
    path: Path | None  # set for bundled and local SAEs


def resolve_saes(entry: str) -> list[SaeRef]:
    """'release/sae_id', 'release/<regex over its ids>', a whole 'release' (all its SAEs), or a local SAE directory."""
    if Path(entry).is_dir():
        return [SaeRef(name=entry, release=None, sae_id=None, path=Path(entry))]
    bundled = registry()["releases"]
    release, _, sae_id = entry.partition("/")
    if release in bundled:
        return _bundled_refs(release, bundled[release], sae_id)
    return _saelens_refs(entry, release, sae_id)


def select_ids(release: str, available: list[str], sae_id: str) -> list[str]:
    """All of a release's ids (no sae_id), the one id, or those a regular expression matches in full
    (e.g. 'blocks\\.[0-5]\\..*'), in the release's order; BadInput lists the ids when none match."""
    if not sae_id:
        return list(available)
    if sae_id in available:
        return [sae_id]
    try:
        pattern = re.compile(sae_id)
    except re.error as error:
        raise BadInput(f"release {release!r} has no SAE {sae_id!r} (nor is it a valid regex: {error})") from error
    matched = [i for i in available if pattern.fullmatch(i)]
    if not matched:
        raise BadInput(
            f"release {release!r} has no SAE {sae_id!r}; it has {', '.join(available)} "
            "(a regular expression must match a whole id)"
        )
    return matched


def _bundled_refs(release: str, info: dict[str, Any], sae_id: str) -> list[SaeRef]:
    ids = select_ids(release, list(info["saes"]), sae_id)
    root = models_dir() / info["path"]
    return [SaeRef(name=f"{release}/{i}", release=release, sae_id=i, path=root / i) for i in ids]


def _saelens_refs(entry: str, release: str, sae_id: str) -> list[SaeRef]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        raise BadInput(f"unknown SAE {entry!r}: not a local directory, a bundled release or a SAELens release")
    ids = select_ids(release, list(directory[release].saes_map), sae_id)
    return [SaeRef(name=f"{release}/{i}", release=release, sae_id=i, path=None) for i in ids]


def load_sae(ref: SaeRef, device: str, dtype: str) -> SAE[Any]:
    """Load one SAE onto `device` in `dtype` (from disk when it has a path, else the Hub); its weights must be finite.

    A local directory that does not load (bad cfg.json, truncated or garbage safetensors,
    shapes that disagree with cfg.json) is BadInput naming the directory and the cause.
    """
    if ref.path is not None:
        if not (ref.path / "cfg.json").exists():
            raise BadInput(f"{ref.path} is not an SAE directory (no cfg.json)")
        try:
            sae = SAE.load_from_disk(ref.path, device=device, dtype=dtype)
        except Exception as error:  # whatever SAELens, safetensors or torch raise on a broken directory
            raise BadInput(f"cannot load the SAE in {ref.path}: {type(error).__name__}: {one_line(error)}") from error
    else:
        with hub_errors(f"SAE {ref.name}"):
            sae = SAE.from_pretrained(ref.release, ref.sae_id, device=device, dtype=dtype)
    sae.eval()
    check_finite_weights(sae, ref.name)
    return sae


def check_finite_weights(sae: SAE[Any], name: str) -> None:
    """Refuse an SAE with NaN or infinite weights, naming the tensors and how many values."""
    bad = [
        f"{key} ({int((~torch.isfinite(value)).sum())} of {value.numel()})"
        for key, value in sae.state_dict().items()
        if value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]
    if bad:
        raise BadInput(f"SAE {name} has NaN or infinite weights: {', '.join(bad)}")


def load_model(name: str, device: str, dtype: str, from_pretrained_kwargs: dict[str, Any]) -> HookedTransformer:
    """A bundled name, a local model directory, or a TransformerLens name (no weight processing, like SAELens)."""
    provided = provided_model(name)  # a caller's in-memory model (saegap.evaluate)
    if provided is not None:
        return provided
    bundled = registry()["models"]
    if name in bundled:
        return _load_model_dir(models_dir() / bundled[name]["path"], device, dtype)
    if Path(name).is_dir() and is_hf_checkpoint(Path(name)):
        return _load_hf_checkpoint(Path(name), device, dtype, from_pretrained_kwargs)
    if Path(name).is_dir():
        return _load_model_dir(Path(name), device, dtype)
    with hub_errors(f"model {name}"):
        return HookedTransformer.from_pretrained_no_processing(
            name, device=device, dtype=DTYPES[dtype], **from_pretrained_kwargs
        )


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Offline (HF_HUB_OFFLINE=1), a file missing from the Hugging Face cache is BadInput saying so."""
    from huggingface_hub import constants

    try:
        yield
    except OSError as error:  # huggingface_hub's LocalEntryNotFoundError, transformers' wrapped OSError
        if not constants.HF_HUB_OFFLINE:
            raise
        raise BadInput(
            f"{what} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1: "
            f"download it once online, or pass a local directory ({type(error).__name__})"
        ) from error


def is_hf_checkpoint(path: Path) -> bool:
    """A transformers `save_pretrained` directory: its config.json names a model_type (saegap's does not)."""
    try:
        return "model_type" in json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False


# from_pretrained's weight-processing flags; all off (as SAELens loads), unless the SAEs ask for one.
_PROCESSING_FLAGS = ("fold_ln", "center_writing_weights", "center_unembed", "fold_value_biases")


def _load_hf_checkpoint(path: Path, device: str, dtype: str, kwargs: dict[str, Any]) -> HookedTransformer:
    """A local transformers checkpoint (e.g. a fine-tuned GPT-2) through TransformerLens, unprocessed.

    TransformerLens's own loaders read a local directory: the architecture and dims come from its
    config.json (`architectures`), the weights are converted by that architecture's converter, and
    the tokenizer is the checkpoint's. This is HookedTransformer.from_pretrained's path without the
    Hub name lookup, so a checkpoint needs neither the Hub nor its base model's dims.
    """
    from transformer_lens import loading_from_pretrained as tl_loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    flags = {flag: bool(kwargs.get(flag, False)) for flag in _PROCESSING_FLAGS}
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(path), dtype=DTYPES[dtype])
        cfg = tl_loading.get_pretrained_model_config(
            str(path), hf_cfg=hf_model.config.to_dict(), fold_ln=flags["fold_ln"], device=device, dtype=DTYPES[dtype]
        )
        state = tl_loading.get_pretrained_state_dict(str(path), cfg, hf_model, dtype=DTYPES[dtype])
        model = HookedTransformer(cfg, AutoTokenizer.from_pretrained(str(path)), move_to_device=False)
        model.load_and_process_state_dict(state, refactor_factored_attn_matrices=False, **flags)
    except Exception as error:  # unsupported architecture, missing weights or tokenizer
        raise BadInput(
            f"cannot load the transformers checkpoint in {path}: {type(error).__name__}: {one_line(error)}"
        ) from error
    model.move_model_modules_to_device()
    return model.eval()


def _load_model_dir(path: Path, device: str, dtype: str) -> HookedTransformer:
    """A saegap model directory: config.json (HookedTransformerConfig kwargs), model.safetensors, tokenizer files."""
    if not (path / "config.json").exists():
        raise BadInput(f"{path} is not a model directory (no config.json)")
    try:
        cfg = HookedTransformerConfig(**json.loads((path / "config.json").read_text()), device=device)
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
        model = HookedTransformer(cfg, tokenizer=tokenizer, default_padding_side="right")
        state = {k: v.to(torch.float32) for k, v in load_file(str(path / "model.safetensors")).items()}
        model.load_state_dict(state, strict=True)
    except Exception as error:  # bad config, missing or broken weights, shapes that disagree
        raise BadInput(f"cannot load the model in {path}: {type(error).__name__}: {one_line(error)}") from error
    return model.to(DTYPES[dtype]).eval()  # already on cfg.device


def load_token_set(name: str) -> Int[np.ndarray, "seq pos"]:
    """A bundled token set or a .npy file of token ids, shape (sequences, positions); BadInput names any problem."""
    return np.asarray(open_token_set(name))


def check_fit(sae: SAE[Any], hook: HookPoint, model: HookedTransformer, model_name: str) -> None:
    """Refuse an SAE that cannot be spliced into `model` at `hook`, naming the mismatch."""
    hook.check_exists(model)
    if sae.cfg.d_in != hook.width(model):
        raise BadInput(f"SAE d_in={sae.cfg.d_in} but {hook.name} has width {hook.width(model)} in {model_name}")
    if sae.cfg.normalize_activations not in _SELF_CONTAINED_NORMALISATIONS:
        raise BadInput(
            f"SAE normalisation {sae.cfg.normalize_activations!r} needs a scaling factor saegap does not have; "
            "fold it into the weights first (SAE.fold_activation_norm_scaling_factor)"
        )
    if sae.cfg.metadata.get("hook_head_index") is not None:
        raise BadInput("single-head hook_z SAEs (hook_head_index set) are not supported; use all heads concatenated")
    check_model_name(sae, model_name)


def check_model_name(sae: SAE[Any], model_name: str) -> None:
    """The SAE's metadata names the model it was trained on; refuse another (warn for a local copy)."""
    sae_model = sae.cfg.metadata.get("model_name")
    if sae_model is None or sae_model == model_name:
        return
    if Path(model_name).is_dir() or model_name.startswith(MEMORY_PREFIX):  # a copy under another name
        log.warning("SAE was trained on %r; evaluating it on model %s", sae_model, model_name)
        return
    raise BadInput(f"SAE was trained on model {sae_model!r}, not {model_name!r}")


def special_token_ids(model: HookedTransformer) -> list[int]:
    """BOS/EOS/PAD ids: left unreplaced and out of the means by default, as in SAELens."""
    tokenizer = model.tokenizer
    ids = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id} if tokenizer else set()
    return sorted(i for i in ids if i is not None)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInput("device 'cuda' requested but no CUDA device is available")
    return device


def as_tensor(tokens: Int[np.ndarray, "seq pos"], device: str) -> Int[Tensor, "seq pos"]:
    return torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.int64)).to(device)
