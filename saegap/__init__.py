"""saegap: are my SAE's reconstruction errors pathological?

From Python (a notebook): `results = saegap.evaluate(model, saes, tokens=...)`, then
`results.layer_summary()`; see saegap/api.py. Importing the package loads no model library
(and not the API's own imports: `evaluate` and `Results` load on first use).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["JobFailed", "Results", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from saegap import api

        return getattr(api, name)
    raise AttributeError(f"module 'saegap' has no attribute {name!r}")
