"""The job-spec flags shared by `saegap evaluate` and `saegap submit`, and the spec they build.

A spec comes from a YAML/JSON file (--spec), then the flags given override its fields;
schema.spec.JobSpec validates the result, and an error names the field.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from schema.spec import MEAN_ABLATION_MEANS, JobSpec

# flag dest -> JobSpec field, for the flags that map one to one.
_FIELD_FLAGS = (
    "model",
    "tokens",
    "text_column",
    "context_size",
    "n_sequences",
    "samples",
    "seed",
    "device",
    "sequences_per_shard",
    "mean_ablation_mean",
    "joint",
)


class SpecError(ValueError):
    """A spec file or flag combination that does not make a valid JobSpec (message names the field)."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spec", type=Path, help="YAML or JSON job spec; flags override its fields")
    parser.add_argument("--model", help="TransformerLens name, registry name (demo) or local model dir")
    parser.add_argument("--sae", action="append", dest="saes", help="SAE: release, release/sae_id or dir (repeat)")
    parser.add_argument("--scope", choices=["all_tokens", "single_token"], help="intervention scope")
    parser.add_argument("--position", type=int, help="single_token: target position P")
    parser.add_argument("--window", type=int, help="single_token: positions read after P")
    parser.add_argument("--samples", type=int, help="draws per random intervention per token")
    parser.add_argument(
        "--mean-ablation-mean", choices=MEAN_ABLATION_MEANS, help="mean_ablation's mean (docs/engine.md)"
    )
    parser.add_argument("--interventions", help="comma-separated intervention names (must include sae)")
    parser.add_argument("--tokens", help=_described("tokens"))
    parser.add_argument("--text-column", help=_described("text_column"))
    parser.add_argument("--context-size", type=int, help=_described("context_size"))
    parser.add_argument("--n-sequences", type=int, help="first N sequences of the token set")
    parser.add_argument("--sequences-per-shard", type=int, help="sequences per shard (unit of work)")
    parser.add_argument("--seed", type=int, help="seed of every random draw")
    parser.add_argument(
        "--joint", action="store_true", default=None, help="also run every SAE spliced at once (a run of its own)"
    )
    parser.add_argument("--device", help="auto, cpu, cuda or mps")
    parser.add_argument("--yes", action="store_true", help="start a job even if it is larger than SAEGAP_MAX_ROWS")


def _described(field: str) -> str | None:
    """A flag's help: its JobSpec field's description, the one place it is written."""
    return JobSpec.model_fields[field].description


def size_refusal(spec: JobSpec, args: argparse.Namespace) -> str | None:
    """Why the job needs --yes (estimated rows over SAEGAP_MAX_ROWS), or None (also with --yes)."""
    if args.yes:
        return None
    from worker.size import refusal

    return refusal(spec)


def spec_from_args(args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> JobSpec:
    """File fields, then `defaults` for fields neither sets, then the flags given; validated."""
    fields = _read_spec_file(args.spec) if args.spec else {}
    fields = {**(defaults or {}), **fields}
    fields.update({name: getattr(args, name) for name in _FIELD_FLAGS if getattr(args, name) is not None})
    if args.saes:
        fields["saes"] = args.saes
    if args.interventions:
        fields["interventions"] = [name.strip() for name in args.interventions.split(",") if name.strip()]
    scope = _scope_fields(args, fields.get("scope"))
    if scope is not None:
        fields["scope"] = scope
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as error:
        raise SpecError(describe(error)) from None


def _scope_fields(args: argparse.Namespace, base: Any) -> dict[str, Any] | None:
    """The scope after flags: --scope picks the kind; --position/--window set its fields."""
    flags = {"position": args.position, "window": args.window}
    if args.scope is None and all(v is None for v in flags.values()):
        return None
    scope = dict(base) if isinstance(base, dict) else {}
    kind = args.scope or scope.get("kind") or ("single_token" if args.position is not None else "all_tokens")
    if kind != scope.get("kind"):
        scope = {}  # fields of the other kind would be unknown fields
    scope["kind"] = kind
    scope.update({name: value for name, value in flags.items() if value is not None})
    return scope


def _read_spec_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    text = path.read_text()
    try:
        fields = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise SpecError(f"spec file {path} is not valid {kind}: {error}") from None
    if not isinstance(fields, dict):
        raise SpecError(f"spec file {path} must hold a mapping of JobSpec fields, got {type(fields).__name__}")
    return fields


def describe(error: ValidationError) -> str:
    """One line per problem, each naming its field (e.g. `samples: Input should be greater than or equal to 1`)."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "spec"
        lines.append(f"invalid job spec: {field}: {problem['msg']}")
    return "\n".join(lines)
