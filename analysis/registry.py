"""The one list of analysis modules; the CLI (`saegap report`) and the UI read it."""

from __future__ import annotations

from types import ModuleType

from analysis import (
    amplification,
    by_position,
    compare_saes,
    cross_layer,
    downstream,
    error_parts,
    gap_correlates,
    joint,
    kl_histogram,
    layer_summary,
    loss_histogram,
    runs,
    sae_metrics,
    sensitivity_curve,
    sigma,
    sigma_draws,
    token_contexts,
    token_sample,
    top_tokens,
    verdict,
)
from analysis.base import AnalysisModule

# The answer first (verdict), then the seed's order (docs/method.md §1.5); each module defines Params and a
# function named like it.
_ORDER: tuple[ModuleType, ...] = (
    runs,
    verdict,
    layer_summary,
    sae_metrics,
    kl_histogram,
    loss_histogram,
    by_position,
    downstream,
    sigma,
    sigma_draws,
    gap_correlates,
    cross_layer,
    top_tokens,
    sensitivity_curve,
    compare_saes,
    error_parts,
    amplification,
    joint,
    token_sample,
    token_contexts,
)


class UnknownModuleError(KeyError):
    """A module name that is not in the registry."""

    def __str__(self) -> str:
        return self.args[0]


def _entry(module: ModuleType) -> AnalysisModule:
    name = module.__name__.rsplit(".", 1)[-1]
    return AnalysisModule(
        name=name, question=module.__doc__.splitlines()[0], params=module.Params, answer=getattr(module, name)
    )


MODULES: dict[str, AnalysisModule] = {entry.name: entry for entry in map(_entry, _ORDER)}


def get_module(name: str) -> AnalysisModule:
    """The module called `name`; UnknownModuleError lists the valid names otherwise."""
    try:
        return MODULES[name]
    except KeyError:
        raise UnknownModuleError(f"unknown analysis module {name!r}; choose from: {', '.join(MODULES)}") from None
