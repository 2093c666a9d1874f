"""saegap's KL-gap eval in SAEBench's output classes (sae_bench.evals.base_eval_output), for the schema
and the check in scripts/saebench/check.py. Runs in a separate environment with pydantic and the
sae-bench wheel's `evals/base_eval_output.py` (docs/saebench.md); saegap itself never imports it.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

_BASE = os.environ["SAEBENCH_BASE_EVAL_OUTPUT"]  # path of sae_bench/evals/base_eval_output.py
_spec = importlib.util.spec_from_file_location("sae_bench_base_eval_output", _BASE)
base = importlib.util.module_from_spec(_spec)
sys.modules["sae_bench_base_eval_output"] = base
_spec.loader.exec_module(base)

EVAL_TYPE_ID_SAEGAP_KL_GAP = "saegap_kl_gap"
Number = float | None  # NaN is written as null


@dataclass
class SaegapKLGapEvalConfig(base.BaseEvalConfig):
    model_name: str = Field(title="Model", description="Model the SAE was spliced into (saegap JobSpec.model)")
    dataset: str = Field(title="Token set", description="saegap token set name or .npy path (JobSpec.tokens)")
    n_sequences: int | None = Field(title="Sequences", description="First N sequences of the token set; null: all")
    scope: str = Field(title="Scope", description="all_tokens: every position replaced; single_token: one position")
    include_special_tokens: bool | None = Field(title="Special tokens replaced", description="all_tokens only")
    target_position: int | None = Field(title="Target position", description="single_token only")
    window: int | None = Field(title="Window", description="Positions after the target measured (single_token only)")
    interventions: list[str] = Field(title="Interventions", description="The SAE and the baselines run")
    samples: int = Field(title="Samples", description="Draws per random baseline per token")
    seed: int = Field(title="Seed", description="saegap job seed of every random draw")
    dtype: str = Field(title="Model dtype", description="dtype the model ran in")
    n_boot: int = Field(title="Bootstrap replicates", description="Sequence-bootstrap replicates of each CI")
    confidence: float = Field(title="CI level", description="Confidence level of the percentile intervals")
    bootstrap_seed: int = Field(title="Bootstrap seed", description="Seed of the bootstrap resampling")
    verdict_rule: str = Field(title="Verdict rule", description="How a verdict is read off the KL ratio's CI")


@dataclass
class KLGapMetrics(base.BaseMetrics):
    kl_sae: Number = Field(
        title="KL with SAE", description="Mean KL(P_clean || Q_sae), nats", json_schema_extra=base.DEFAULT_DISPLAY
    )
    ce_loss_increase_sae: Number = Field(title="CE increase with SAE", description="Mean CE-loss increase, nats")
    frac_tokens_sae_above_eps_random: Number = Field(
        title="Tokens with SAE KL > eps_random KL",
        description="Share of intervened tokens",
        json_schema_extra=base.DEFAULT_DISPLAY,
    )
    z_median: Number = Field(title="Sigma test: median z", description="single_token runs with draws; else null")
    z_p90: Number = Field(title="Sigma test: 90th percentile z", description="single_token runs with draws")
    frac_z_above_2: Number = Field(title="Sigma test: share z > 2", description="single_token runs with draws")
    n_tokens: int = Field(title="Tokens", description="Intervened tokens")
    n_sequences: int = Field(title="Sequences", description="Sequences (the bootstrap's resampling unit)")


@dataclass
class BaselineComparisonMetrics(base.BaseMetrics):
    kl_baseline: Number = Field(title="KL with baseline", description="Mean KL(P_clean || Q_baseline), nats")
    kl_ratio: Number = Field(
        title="KL ratio",
        description="Mean KL with SAE / mean KL with the baseline",
        json_schema_extra=base.DEFAULT_DISPLAY,
    )
    kl_ratio_ci_lower: Number = Field(title="KL ratio CI lower", description="Paired sequence bootstrap")
    kl_ratio_ci_upper: Number = Field(title="KL ratio CI upper", description="Paired sequence bootstrap")
    ce_ratio: Number = Field(title="CE-increase ratio", description="Mean CE increase with SAE / with the baseline")
    ce_ratio_ci_lower: Number = Field(title="CE ratio CI lower", description="Paired sequence bootstrap")
    ce_ratio_ci_upper: Number = Field(title="CE ratio CI upper", description="Paired sequence bootstrap")
    verdict: str | None = Field(
        title="Verdict",
        description="pathological | no gap | better than baseline; null: baseline not run",
        json_schema_extra=base.DEFAULT_DISPLAY,
    )


@dataclass
class ModelBehaviorPreservationMetrics(base.BaseMetrics):
    kl_div_score: Number = Field(title="KL Divergence Score", description="(kl_abl - kl_sae) / kl_abl, SAELens")
    kl_div_with_ablation: Number = Field(title="KL Divergence with Ablation", description="Zero ablation")
    kl_div_with_sae: Number = Field(title="KL Divergence with SAE", description="Mean KL with the SAE")


@dataclass
class ModelPerformancePreservationMetrics(base.BaseMetrics):
    ce_loss_score: Number = Field(title="Cross Entropy Loss Score", description="(ce_abl - ce_sae) / (ce_abl - ce)")
    ce_loss_with_ablation: Number = Field(title="CE Loss with Ablation", description="Zero ablation")
    ce_loss_with_sae: Number = Field(title="CE Loss with SAE", description="Mean CE loss with the SAE")
    ce_loss_without_sae: Number = Field(title="CE Loss without SAE", description="Clean mean CE loss")


@dataclass
class ReconstructionQualityMetrics(base.BaseMetrics):
    mse: Number = Field(title="Mean Squared Error", description="mean ||x - SAE(x)||^2 (sum over dimensions)")
    cossim: Number = Field(title="Cosine Similarity", description="mean cos(x, SAE(x))")


@dataclass
class ShrinkageMetrics(base.BaseMetrics):
    l2_ratio: Number = Field(title="L2 Ratio", description="mean ||SAE(x)|| / ||x||")


@dataclass
class SparsityMetrics(base.BaseMetrics):
    l0: Number = Field(title="L0 Sparsity", description="Mean active latents")
    l1: Number = Field(title="L1 Sparsity", description="Mean sum of |latent activations|")


@dataclass
class SaegapKLGapMetricCategories(base.BaseMetricCategories):
    kl_gap: KLGapMetrics = Field(title="KL gap", description="The SAE's KL and CE increase; token share; sigma test")
    vs_eps_random: BaselineComparisonMetrics = Field(title="vs eps_random", description="x + eps u, u isotropic")
    vs_cos_random_sae_norm: BaselineComparisonMetrics = Field(
        title="vs cos_random_sae_norm", description="Random vector at the SAE's cosine, norm ||SAE(x)||"
    )
    vs_cos_random_true_norm: BaselineComparisonMetrics = Field(
        title="vs cos_random_true_norm", description="Random vector at the SAE's cosine, norm ||x||"
    )
    vs_eps_cov_random: BaselineComparisonMetrics = Field(
        title="vs eps_cov_random", description="x + eps d, d from a Gaussian fitted to the activations"
    )
    vs_eps_real_diff: BaselineComparisonMetrics = Field(
        title="vs eps_real_diff", description="x + eps d, d the difference of two real activations"
    )
    model_behavior_preservation: ModelBehaviorPreservationMetrics = Field(
        title="Model Behavior Preservation", description="SAELens core metrics, from the same records"
    )
    model_performance_preservation: ModelPerformancePreservationMetrics = Field(
        title="Model Performance Preservation", description="SAELens core metrics, from the same records"
    )
    reconstruction_quality: ReconstructionQualityMetrics = Field(
        title="Reconstruction Quality", description="SAELens core metrics, from the same records"
    )
    shrinkage: ShrinkageMetrics = Field(title="Shrinkage", description="SAELens core metrics")
    sparsity: SparsityMetrics = Field(title="Sparsity", description="SAELens core metrics")


@dataclass
class InterventionDetail(base.BaseResultDetail):
    intervention: str = Field(title="Intervention", description="saegap intervention name")
    kl_mean: Number = Field(title="Mean KL", description="nats")
    kl_mean_ci_lower: Number = Field(title="Mean KL CI lower", description="Sequence bootstrap")
    kl_mean_ci_upper: Number = Field(title="Mean KL CI upper", description="Sequence bootstrap")
    kl_median: Number = Field(title="Median KL", description="Within a factor 1.059 (log bins)")
    kl_p999: Number = Field(title="99.9th percentile KL", description="Within a factor 1.059 (log bins)")
    ce_loss_increase_mean: Number = Field(title="Mean CE increase", description="nats")
    n_tokens: int = Field(title="Tokens", description="Tokens with a record")


@dataclass(config=ConfigDict(title="saegap KL gap"))
class SaegapKLGapEvalOutput(
    base.BaseEvalOutput[SaegapKLGapEvalConfig, SaegapKLGapMetricCategories, InterventionDetail]
):
    """
    Are the SAE's reconstruction errors pathological? Mean KL of the SAE's splice over that of random
    baselines at the same distance, with paired sequence-bootstrap CIs and verdicts. From saegap.
    """

    eval_config: SaegapKLGapEvalConfig
    eval_id: str
    datetime_epoch_millis: int
    eval_result_metrics: SaegapKLGapMetricCategories
    eval_result_details: list[InterventionDetail] = Field(
        default_factory=list, title="Per intervention", description="Mean, median and tail KL of every intervention"
    )
    eval_type_id: str = Field(
        default=EVAL_TYPE_ID_SAEGAP_KL_GAP, title="Eval Type ID", description="The type of the evaluation"
    )
