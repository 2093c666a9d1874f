#!/usr/bin/env bash
# Rebuild the bundled demo model from scratch (fixed seeds): corpus -> tokenizer + splits -> model ->
# baselines -> SAEs -> SAE evals -> registry -> card figures. CPU only, ~45-60 min on 2 shared cores.
# Logs go to .work/demo/*.log.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
PY=.venv/bin/python
bash scripts/demo/fetch_corpus.sh
$PY -m scripts.demo.prepare_data
$PY -m scripts.demo.train_model
$PY -m scripts.demo.baselines
$PY -m scripts.demo.train_saes
$PY -m scripts.demo.eval_saes
$PY -m scripts.demo.write_registry
$PY -m scripts.demo.make_card
