"""Render the measured figures into models/demo/CARD.md between the figure markers.

Reads models/demo/baselines.json, models/demo/sae_evals.json, the file sizes under models/ and the
wall times logged by train_model / train_saes in .work/demo/*.log (the last run's lines).
"""

import json
import re

from scripts.demo.common import BASELINES_PATH, MODELS_DIR, SAE_EVALS_PATH, WORK_DIR

CARD_PATH = MODELS_DIR / "demo" / "CARD.md"
BEGIN, END = "<!-- figures:begin (scripts/demo/make_card.py) -->", "<!-- figures:end -->"
SAE_COLUMNS = ("l0", "explained_variance", "ce_loss_score", "kl_div_with_sae", "kl_div_score", "ce_loss_with_sae")


def last_logged(log_name: str, pattern: str) -> list[str]:
    """Groups of the last line of .work/demo/<log_name>.log matching `pattern`; 'n/a' for each if none."""
    log_path = WORK_DIR / f"{log_name}.log"
    matches = list(re.finditer(pattern, log_path.read_text())) if log_path.exists() else []
    return list(matches[-1].groups()) if matches else ["n/a"] * re.compile(pattern).groups


def model_section(baselines: dict) -> list[str]:
    wall_s, steps = last_logged("train_model", r"training wall time ([\d.]+)s for (\d+) steps")
    return [
        "### Model (held-out split)",
        "",
        f"Held-out: {baselines['n_heldout_sequences']} sequences, {baselines['n_heldout_targets']} next-token targets.",
        "",
        "| predictor | held-out CE (nats/token) |",
        "|---|---|",
        f"| demo model | {baselines['model_ce']:.4f} |",
        f"| bigram, add-k (k={baselines['bigram_add_k']}, fitted on train) | {baselines['bigram_ce']:.4f} |",
        f"| unigram (add-one, fitted on train) | {baselines['unigram_ce']:.4f} |",
        "",
        f"Model training wall time: {wall_s} s for {steps} steps (2 CPU threads, shared machine).",
        "",
    ]


def sae_section(evals: dict) -> list[str]:
    lines = [
        f"### SAEs (sae_lens.evals.run_evals, {evals['n_batches']} x {evals['batch_size_prompts']} held-out "
        f"sequences per pass, exclude_special_tokens={evals['exclude_special_tokens']})",
        "",
        "| release | sae_id | arch | d_sae | " + " | ".join(SAE_COLUMNS) + " | train wall s |",
        "|---|---|---|---|" + "---|" * len(SAE_COLUMNS) + "---|",
    ]
    wall_times: list[float] = []
    for release, saes in evals["saes"].items():
        for hook_name, figures in saes.items():
            wall_s = last_logged("train_saes", rf"{re.escape(release)}/{re.escape(hook_name)} trained in ([\d.]+)s")[0]
            wall_times += [float(wall_s)] if wall_s != "n/a" else []
            cells = " | ".join(f"{figures[column]:.4f}" for column in SAE_COLUMNS)
            lines.append(
                f"| {release} | {hook_name} | {figures['architecture']} | {figures['d_sae']} | {cells} | {wall_s} |"
            )
    total = f"{sum(wall_times):.0f} s of training wall time for {len(wall_times)} SAEs (sum of the per-SAE times)"
    return [*lines, "", f"All SAEs: {total}.", ""]


def size_section() -> list[str]:
    weights = [p for p in MODELS_DIR.rglob("*") if p.suffix in {".safetensors", ".npy"}]
    total_mb = sum(p.stat().st_size for p in weights) / 2**20
    return [f"Committed weights + tokens: {len(weights)} files, {total_mb:.1f} MiB.", ""]


def render_figures() -> str:
    baselines = json.loads(BASELINES_PATH.read_text())
    evals = json.loads(SAE_EVALS_PATH.read_text())
    return "\n".join([BEGIN, "", *model_section(baselines), *sae_section(evals), *size_section(), END])


def replace_figures(card_text: str, figures: str) -> str:
    if BEGIN not in card_text or END not in card_text:
        raise ValueError(f"{CARD_PATH} lacks the figure markers {BEGIN!r} ... {END!r}")
    head, rest = card_text.split(BEGIN, 1)
    return head + figures + rest.split(END, 1)[1]


def main() -> None:
    CARD_PATH.write_text(replace_figures(CARD_PATH.read_text(), render_figures()))


if __name__ == "__main__":
    main()
