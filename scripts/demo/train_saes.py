"""Train the demo SAEs with SAELens's own trainer (LanguageModelSAETrainingRunner).

The shipped HookedTransformer is passed as override_model and the training split as an in-memory
tokenized datasets.Dataset (override_dataset). Each SAE is trained into .work/demo/sae_runs/, then
re-loaded with SAE.load_from_disk and written with save_model to models/demo/saes/<release>/<hook>/.

Usage: .venv/bin/python -m scripts.demo.train_saes [--releases demo-res demo-attn] [--layers 0 1]
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from sae_lens import SAE, LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner
from sae_lens.config import LoggingConfig
from sae_lens.saes.standard_sae import StandardTrainingSAEConfig
from sae_lens.saes.topk_sae import TopKTrainingSAEConfig
from transformer_lens import HookedTransformer

from scripts.demo.common import (
    MODEL_CONFIG,
    RELEASES,
    SEED,
    SEQ_LEN,
    TORCH_THREADS,
    TRAIN_TOKENS_PATH,
    WORK_DIR,
    ReleaseSpec,
    sae_dir,
    setup_logging,
)
from scripts.demo.load_demo import load_demo_model

EXPANSION = 16  # d_sae = 16 * d_in
TRAINING_TOKENS = 307_200  # 150 steps; the shared 2-core machine ran at 1.3k-7.7k tokens/s
BATCH_TOKENS = 2048
LR = 3e-3
L1_COEFFICIENT = 2.0  # standard SAEs, on inputs normalised to E||x|| = sqrt(d_in)
TOPK_K = 32  # TopK SAEs; ~ the standard SAEs' L0
RUNS_DIR = WORK_DIR / "sae_runs"

log = setup_logging("train_saes")


def sae_training_config(spec: ReleaseSpec, d_in: int) -> StandardTrainingSAEConfig | TopKTrainingSAEConfig:
    """The SAE architecture config; 'expected_average_only_in' is folded into the weights after training."""
    shared = {"d_in": d_in, "d_sae": EXPANSION * d_in, "normalize_activations": "expected_average_only_in"}
    if spec.architecture == "standard":
        n_steps = TRAINING_TOKENS // BATCH_TOKENS
        return StandardTrainingSAEConfig(l1_coefficient=L1_COEFFICIENT, l1_warm_up_steps=n_steps // 5, **shared)
    return TopKTrainingSAEConfig(k=TOPK_K, **shared)


def runner_config(spec: ReleaseSpec, hook_name: str, d_in: int, output_path: Path) -> LanguageModelSAERunnerConfig:
    n_steps = TRAINING_TOKENS // BATCH_TOKENS
    return LanguageModelSAERunnerConfig(
        sae=sae_training_config(spec, d_in),
        model_name="demo",
        hook_name=hook_name,
        dataset_path="saegap-demo-train-split",  # metadata only: the data is passed as override_dataset
        is_dataset_tokenized=True,
        streaming=False,
        context_size=SEQ_LEN,
        prepend_bos=True,  # every stored row already starts with BOS
        exclude_special_tokens=True,  # BOS positions are neither trained on nor evaluated (SAEBench convention)
        training_tokens=TRAINING_TOKENS,
        train_batch_size_tokens=BATCH_TOKENS,
        store_batch_size_prompts=32,
        n_batches_in_buffer=128,  # SAELens buffer = n_batches_in_buffer * context_size tokens (16k)
        n_batches_for_norm_estimate=20,
        lr=LR,
        lr_warm_up_steps=n_steps // 20,
        lr_decay_steps=n_steps // 5,
        device="cpu",
        seed=SEED,
        dtype="float32",
        model_from_pretrained_kwargs={},
        logger=LoggingConfig(log_to_wandb=False),
        n_checkpoints=0,
        checkpoint_path=None,
        output_path=str(output_path),
        verbose=False,
    )


def hook_width(model: HookedTransformer, hook_name: str) -> int:
    """Width of the hook's activation with heads concatenated (hook_z: n_heads * d_head)."""
    _, cache = model.run_with_cache(torch.zeros(1, 2, dtype=torch.long), names_filter=hook_name)
    return int(np.prod(cache[hook_name].shape[2:]))


def train_one(model: HookedTransformer, dataset: Dataset, release: str, hook_name: str) -> None:
    spec = RELEASES[release]
    run_dir = RUNS_DIR / release / hook_name
    cfg = runner_config(spec, hook_name, hook_width(model, hook_name), run_dir)
    started = time.monotonic()
    LanguageModelSAETrainingRunner(cfg, override_dataset=dataset, override_model=model).run()
    sae = SAE.load_from_disk(str(run_dir), device="cpu")
    sae.save_model(str(sae_dir(release, hook_name)))
    log.info("%s/%s trained in %.1fs", release, hook_name, time.monotonic() - started)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--releases", nargs="+", choices=sorted(RELEASES), default=list(RELEASES))
    parser.add_argument("--layers", nargs="+", type=int, default=list(range(MODEL_CONFIG["n_layers"])))
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(TORCH_THREADS)
    model = load_demo_model()
    dataset = Dataset.from_dict({"input_ids": np.load(TRAIN_TOKENS_PATH).astype(np.int64).tolist()})
    started = time.monotonic()
    for release in args.releases:
        for hook_name in RELEASES[release].hook_names(MODEL_CONFIG["n_layers"]):
            if int(hook_name.split(".")[1]) in args.layers:
                train_one(model, dataset, release, hook_name)
    log.info("all SAEs trained in %.1fs", time.monotonic() - started)


if __name__ == "__main__":
    main()
