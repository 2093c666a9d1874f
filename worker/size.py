"""How many record rows a job will write, estimated before it starts, and the limit that asks for --yes.

The estimate needs only the spec, the token file's shape and the SAE names (no model is
loaded): token rows = sequences x recorded positions x runs; intervention rows at most
that times the variants per token (deterministic interventions once, random ones
`samples` times). Run time grows with the same count (every intervention row is one
full-vocabulary KL), so one limit covers both: SAEGAP_MAX_ROWS, default MAX_ROWS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from schema.spec import JobSpec
from worker.errors import BadInput
from worker.registry import open_token_set, registry

MAX_ROWS = 10_000_000  # ~7x the demo job (1.4 M rows); the 4,096-sequence demo set writes 23 M


@dataclass(frozen=True)
class JobSize:
    sequences: int
    recorded_positions: int  # per sequence
    runs: int
    variants: int  # intervention rows per recorded position and run

    @property
    def rows(self) -> int:
        return self.sequences * self.recorded_positions * self.runs * (1 + self.variants)


def max_rows() -> int:
    return int(os.environ.get("SAEGAP_MAX_ROWS", MAX_ROWS))


def estimate(spec: JobSpec) -> JobSize:
    """The job's size; BadInput when its token set cannot be read (the job itself will say why)."""
    from worker.interventions import INTERVENTIONS

    shape = _token_shape(spec)
    sequences = min(spec.n_sequences or shape[0], shape[0])
    positions = shape[1]
    if spec.scope.kind == "single_token":
        positions = max(0, min(spec.scope.position + spec.scope.window + 1, positions) - spec.scope.position)
    variants = sum(spec.samples if INTERVENTIONS[name].stochastic else 1 for name in spec.interventions)
    return JobSize(sequences, positions, sum(_run_count(entry) for entry in spec.saes), variants)


# Text sources are tokenized when the job prepares; until then the estimate takes these.
_TEXT_SEQUENCES, _TEXT_CONTEXT = 256, 128  # worker/token_sources.py STREAMED_SEQUENCES, SAELens's context_size


def _token_shape(spec: JobSpec) -> tuple[int, int]:
    """A bundled set's or .npy's shape; for text (or the SAE's dataset) n_sequences x context_size, or defaults."""
    if spec.tokens is not None and (spec.tokens in registry()["token_sets"] or spec.tokens.endswith(".npy")):
        return open_token_set(spec.tokens, mmap=True).shape
    return spec.n_sequences or _TEXT_SEQUENCES, spec.context_size or _TEXT_CONTEXT


def _run_count(entry: str) -> int:
    """SAEs an entry names: a whole bundled release counts all of its SAEs; anything else one
    (a whole SAELens release is also counted as one: the estimate stays a lower bound there)."""
    release, _, sae_id = entry.partition("/")
    bundled = registry()["releases"]
    return len(bundled[release]["saes"]) if release in bundled and not sae_id else 1


def refusal(spec: JobSpec) -> str | None:
    """Why the job needs --yes (its estimated rows exceed the limit), or None."""
    try:
        size = estimate(spec)
    except BadInput:
        return None
    limit = max_rows()
    if size.rows <= limit:
        return None
    return (
        f"this job would write about {size.rows / 1e6:,.1f} M rows ({size.sequences} sequences x "
        f"{size.recorded_positions} positions x {size.runs} runs x {1 + size.variants} rows each), more than "
        f"the limit of {limit / 1e6:,.1f} M (SAEGAP_MAX_ROWS), and run for long in proportion; "
        "add --yes to start it anyway"
    )
