# ruff: noqa: T201, E402  (a notebook: prints its results, imports per cell)
# %% [markdown]
# # saegap from a notebook
#
# `saegap.evaluate` splices SAEs into a model, records every token's KL and CE-loss increase
# for the SAE and its baselines, and returns `Results`. No broker, no server: records go to a
# fresh temporary store (or `data_dir=`). This percent-format script opens as a notebook in
# VS Code / Jupytext and runs as a plain script; the test suite runs it (tests/test_api.py).
# It uses the bundled demo model, so it runs offline in about a minute on a laptop CPU.

# %%
import saegap

results = saegap.evaluate("demo", "demo-res/blocks.2.hook_resid_pre", n_sequences=16, device="cpu")
print(results.layer_summary()[["layer", "intervention", "kl_mean", "kl_ratio", "kl_ratio_lo", "kl_ratio_hi"]])

# %% [markdown]
# ## An SAE in memory
#
# An `sae_lens.SAE` object works as well, e.g. one you are training. Here: the bundled SAE,
# loaded and then perturbed, standing in for a checkpoint mid-training. A loaded
# `HookedTransformer` and a token tensor may be passed the same way; in-memory objects always
# run in this process.

# %%
import torch
from sae_lens import SAE

from worker.registry import models_dir

sae = SAE.load_from_disk(models_dir() / "demo/saes/demo-res/blocks.2.hook_resid_pre", device="cpu")
with torch.no_grad():
    sae.W_dec.mul_(0.9)  # a worse reconstruction: its KL should rise
perturbed = saegap.evaluate("demo", [sae], n_sequences=16, device="cpu")
before, after = (r.layer_summary().query("intervention == 'sae'").kl_mean.iloc[0] for r in (results, perturbed))
print(f"SAE KL before {before:.4f}, after perturbing {after:.4f}")

# %% [markdown]
# ## Any analysis, SQL, or the HTML report

# %%
print(perturbed.report("loss_histogram").head())
print(perturbed.sql("SELECT intervention, avg(kl) AS kl FROM token_records GROUP BY ALL ORDER BY kl"))
print("report written to", perturbed.html(perturbed.data_dir / "report.html"))
