"""Hook points saegap can splice into, parsed from TransformerLens hook names."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from worker.errors import BadInput

HookPointName = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "attn_z"]

# TransformerLens hook-name suffix -> saegap hook point.
_SUFFIXES: dict[str, HookPointName] = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "attn.hook_z": "attn_z",
}
_PATTERN = re.compile(r"^blocks\.(\d+)\.(" + "|".join(re.escape(s) for s in _SUFFIXES) + r")$")


@dataclass(frozen=True)
class HookPoint:
    name: str  # the TransformerLens hook name, e.g. blocks.6.hook_resid_pre
    layer: int
    point: HookPointName

    @classmethod
    def parse(cls, name: str) -> HookPoint:
        match = _PATTERN.match(name)
        if match is None:
            allowed = ", ".join(f"blocks.L.{s}" for s in _SUFFIXES)
            raise BadInput(f"unknown hook {name!r}: saegap splices into {allowed}")
        return cls(name=name, layer=int(match.group(1)), point=_SUFFIXES[match.group(2)])

    def width(self, model: HookedTransformer) -> int:
        """Width of the activation an SAE at this hook reads (hook_z: heads concatenated)."""
        cfg = model.cfg
        return cfg.n_heads * cfg.d_head if self.point == "attn_z" else cfg.d_model

    def check_exists(self, model: HookedTransformer) -> None:
        if self.name not in model.hook_dict:
            raise BadInput(f"hook {self.name!r} does not exist in a model with {model.cfg.n_layers} layers")

    def flatten(self, act: Float[Tensor, "batch pos ..."]) -> Float[Tensor, "batch pos d"]:
        """hook_z (B, P, H, d_head) -> (B, P, H * d_head); other hooks pass through."""
        return act.flatten(-2) if self.point == "attn_z" else act
