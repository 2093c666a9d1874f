"""One fixed colour per intervention, the same on every UI page and in the HTML report.

The seed's comparison is sae against eps_random, so those two get the strongest colours;
the anisotropic baselines (eps_cov_random, eps_real_diff) come next, the ablations are
greys. The mapping is keyed by name, never by position in a chart's subset, so a colour
does not move when a filter drops interventions.
"""

from __future__ import annotations

from schema.spec import INTERVENTION_NAMES

# Named choices for the interventions the seed's figures are about; the rest take the muted
# palette below in INTERVENTION_NAMES order.
_FIXED = {
    "sae": "#d62728",  # strong red
    "eps_random": "#1f4e9c",  # strong blue
    "eps_cov_random": "#2ca02c",  # green
    "eps_real_diff": "#9467bd",  # purple
    "zero_ablation": "#7f7f7f",  # grey
    "mean_ablation": "#bcbcbc",  # light grey
}
_MUTED = ("#ff9f40", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#aec7e8", "#98df8a", "#c49c94", "#f7b6d2")


def _palette() -> dict[str, str]:
    others = [name for name in INTERVENTION_NAMES if name not in _FIXED]
    muted = {name: _MUTED[i % len(_MUTED)] for i, name in enumerate(others)}
    return {name: _FIXED.get(name) or muted[name] for name in INTERVENTION_NAMES}


INTERVENTION_COLOURS: dict[str, str] = _palette()


def colour_of(intervention: str) -> str:
    """The fixed colour of an intervention (black for a name the store knows but this build does not)."""
    return INTERVENTION_COLOURS.get(intervention, "#000000")


def altair_scale(interventions: list[str] | None = None) -> dict[str, list[str]]:
    """Keyword arguments for `alt.Scale(**...)`: domain and range fixed by name, in INTERVENTION_NAMES order."""
    shown = [name for name in INTERVENTION_NAMES if interventions is None or name in interventions]
    return {"domain": shown, "range": [colour_of(name) for name in shown]}
