"""The job specification: one validated pydantic model per job, stored as JSON with it.

A job is model x SAEs x scope x tokens. Each SAE (with the hook it was trained on)
becomes one *run*; all runs of a job share the model, the scope and the tokens, so a
shard (one batch of sequences) evaluates every run from one clean forward pass.
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The one list of intervention names (docs/method.md §2). The worker's registry maps each
# name to its formula; tests check the two agree.
InterventionName = Literal[
    "sae",
    "sae_norm_corrected",
    "norm_only",
    "eps_random",
    "cos_random_sae_norm",
    "cos_random_true_norm",
    "zero_ablation",
    "mean_ablation",
    "eps_cov_random",
    "eps_real_diff",
    # The SAE's error split into the part a ridge fit predicts linearly from x and the rest
    # (docs/method.md §8; Engels et al. 2024, arXiv 2410.14670), each with a random baseline
    # at its own distance. Opt-in: not in a job's default list.
    "sae_error_linear",
    "sae_error_nonlinear",
    "eps_random_linear",
    "eps_random_nonlinear",
]
INTERVENTION_NAMES: tuple[InterventionName, ...] = get_args(InterventionName)
# The seed's comparison, named once: the SAE against a random point at the same distance (docs/method.md §1.1).
SAE: InterventionName = "sae"
BASELINE: InterventionName = "eps_random"
# The random baselines an SAE is compared with, the isotropic one first (docs/method.md §2.1).
RandomBaseline = Literal["eps_random", "cos_random_sae_norm", "cos_random_true_norm", "eps_cov_random", "eps_real_diff"]
RANDOM_BASELINES: tuple[RandomBaseline, ...] = get_args(RandomBaseline)
# The original scripts' ten interventions: a job's default list (the error parts are opt-in).
_SEED_COUNT = INTERVENTION_NAMES.index("eps_real_diff") + 1
SEED_INTERVENTION_NAMES: tuple[InterventionName, ...] = INTERVENTION_NAMES[:_SEED_COUNT]
# The error parts: each reads the run's ridge fit of SAE(x) - x on x (RunInfo.error_linear_r2).
ERROR_PART_NAMES: tuple[InterventionName, ...] = INTERVENTION_NAMES[_SEED_COUNT:]

# Where mean_ablation's mean comes from (docs/engine.md): the fit sequences' non-special
# tokens, or every position of the evaluated batch, BOS included (the original scripts).
MeanAblationMean = Literal["fit_tokens", "batch_with_bos"]
MEAN_ABLATION_MEANS: tuple[MeanAblationMean, ...] = get_args(MeanAblationMean)


# The engine's working-memory budget (JobSpec.memory_budget_bytes): the default leaves most of a
# 24 GB GPU or machine to the model's weights.
DEFAULT_MEMORY_BUDGET_BYTES = 3 * 2**30
MIN_MEMORY_BUDGET_BYTES = 2**20


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AllTokenScope(_Strict):
    """Every position is intervened at once (the seed's main experiment)."""

    kind: Literal["all_tokens"] = "all_tokens"
    # SAELens/SAEBench leave BOS/EOS/PAD unreplaced and out of the means; the
    # original scripts replaced them too (docs/method.md §5).
    include_special_tokens: bool = False


class SingleTokenScope(_Strict):
    """One position P is intervened; KL and loss are read at P and the next `window`."""

    kind: Literal["single_token"] = "single_token"
    position: int = Field(ge=1, description="target position P (0 is BOS)")
    window: int = Field(default=16, ge=0)


Scope = Annotated[AllTokenScope | SingleTokenScope, Field(discriminator="kind")]


class JobSpec(_Strict):
    """What to evaluate. Defaults reproduce the bundled demo job."""

    model: str = Field(default="demo", min_length=1, description="TransformerLens name, registry name or local dir")
    saes: list[str] = Field(
        default_factory=lambda: ["demo-res"],
        min_length=1,
        description="'release/sae_id', a whole 'release', or a local SAE directory",
    )
    scope: Scope = Field(default_factory=AllTokenScope)
    interventions: list[InterventionName] = Field(
        default_factory=lambda: list(SEED_INTERVENTION_NAMES),
        min_length=1,
        description="default: the seed's ten; the error parts (sae_error_linear, ...) are opt-in",
    )
    samples: int = Field(default=1, ge=1, le=10_000, description="draws per random intervention per token")
    tokens: str | None = Field(
        default=None,
        min_length=1,
        description="None: the SAE's own dataset (cfg.metadata.dataset_path); else a bundled token set, a .npy "
        "of token ids, a .txt/.jsonl/.parquet file, a datasets.save_to_disk dir or a Hub dataset (docs/engine.md)",
    )
    text_column: str = Field(default="text", min_length=1, description="the text column of a dataset token source")
    context_size: int | None = Field(
        default=None, ge=2, description="row length for text sources; None: the SAE's metadata.context_size"
    )
    n_sequences: int | None = Field(default=None, ge=1, description="first N sequences of the token set; None: all")
    sequences_per_shard: int = Field(default=32, ge=1)
    fit_sequences: int = Field(default=64, ge=2, description="sequences used to fit the mean/covariance baselines")
    mean_ablation_mean: MeanAblationMean = Field(
        default="fit_tokens",
        description="mean_ablation's mean: the fit sequences' non-special tokens, or every position of the "
        "evaluated batch (shard) with BOS, as the original scripts took it",
    )
    joint: bool = Field(
        default=False,
        description="also splice every SAE at once, each at its own site, as a run of its own (docs/method.md §10)",
    )
    seed: int = Field(default=0, ge=0, lt=2**31)
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    memory_budget_bytes: int = Field(
        default=DEFAULT_MEMORY_BUDGET_BYTES,
        ge=MIN_MEMORY_BUDGET_BYTES,
        le=2**50,
        description="the engine's working memory per batch, in bytes (model and SAE weights not counted): "
        "blocks of patched rows and vocabulary chunks are sized from it (docs/engine.md)",
    )
    max_tokens_per_pass: int | None = Field(
        default=None,
        ge=128,
        description="deprecated (specs stored before memory_budget_bytes carry it): also caps the tokens of "
        "one patched pass",
    )

    @field_validator("tokens", mode="before")
    @classmethod
    def _blank_tokens_are_none(cls, value: object) -> object:
        """An empty token-set field (the UI's blank box) means the SAE's own dataset."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _no_repeats(self) -> JobSpec:
        for field in ("saes", "interventions"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists an entry twice: {values}")
        if "sae" not in self.interventions:
            raise ValueError("interventions must include 'sae': every gap is measured against it")
        return self
