"""Evaluate SAEs and baselines on a model, wait for it, and print the headline table per layer.

`saegap evaluate` with no arguments runs the bundled demo job in this process: the demo
model, every layer's demo-res SAE, the bundled tokens, all-token scope, the first 256
sequences (another token set: all of its sequences unless --n-sequences says otherwise).
Flags or --spec FILE change it; a job estimated to write more than SAEGAP_MAX_ROWS rows
asks for --yes. With SAEGAP_BROKER_URL set the job goes to the queue and this command
waits for the workers. Records land in the store (SAEGAP_DATA).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import pandas as pd
from tqdm import tqdm

from schema.jobs import JobInfo, Progress
from schema.spec import JobSpec
from schema.store import Store
from worker import api
from worker.commands import err, out, spec_args
from worker.errors import QueueUnavailable

DEFAULT_SEQUENCES = 256  # the bundled demo set's default; sized to finish in minutes on a 2-core CPU
OTHER_KL_HEADER = "mean KL"


def configure(parser: argparse.ArgumentParser) -> None:
    spec_args.configure(parser)
    parser.add_argument("--wide", action="store_true", help="also print every intervention's mean KL per layer")


def run(args: argparse.Namespace) -> int:
    try:
        spec = with_default_sequences(spec_args.spec_from_args(args))
    except spec_args.SpecError as error:
        err(str(error))
        return 2
    refusal = spec_args.size_refusal(spec, args)
    if refusal:
        err(refusal)
        return 2
    store = Store.open()
    try:
        job = start_and_wait(spec, store)
    except QueueUnavailable as error:
        err(str(error))
        return 2
    if job.status != "done":
        err(f"job {job.id} {job.status}: {job.error or 'no error recorded'}")
        return 1
    from analysis.verdict_text import answer  # analysis loads on use, not at parser build

    if args.wide:
        out(headline_table(job.id, store))
    out(where_records_are(job.id, store) + "\n")
    out(answer(job.id, store))  # the verdict, last: it fits 100 columns
    return 0


def with_default_sequences(spec: JobSpec) -> JobSpec:
    """The bundled demo set defaults to its first DEFAULT_SEQUENCES sequences; any other set to all of it."""
    if spec.n_sequences is None and spec.tokens == JobSpec().tokens:
        return spec.model_copy(update={"n_sequences": DEFAULT_SEQUENCES})
    return spec


def start_and_wait(spec: JobSpec, store: Store) -> JobInfo:
    """api.start (queued with a broker, else here) and wait for it, a bar advancing per shard."""
    with _Bar() as bar, contextlib.redirect_stdout(sys.stderr):
        # TransformerLens prints while loading ("Changing model dtype ..."): keep stdout for the table.
        return api.start(spec, store=store, on_progress=bar.update).job


class _Bar:
    """A tqdm bar on stderr counting shards, with tokens/s and the store's ETA in its postfix."""

    def __init__(self) -> None:
        self.bar = tqdm(desc="job", unit="shard", file=sys.stderr, total=None)

    def update(self, progress: Progress) -> None:
        self.bar.set_description(f"job {progress.job_id}", refresh=False)
        self.bar.total = progress.shards_total or None
        self.bar.n = progress.shards_done
        rate = f"{progress.tokens_per_second:,.0f} tok/s" if progress.tokens_per_second else "-"
        eta = f"{progress.eta_seconds:.0f}s" if progress.eta_seconds is not None else "-"
        self.bar.set_postfix_str(f"{progress.status}, {rate}, ETA {eta}")

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def headline_table(job_id: int, store: Store) -> str:
    """Per layer: mean KL of every intervention, sae/eps_random ratio [95% CI], mean CE increase, tokens."""
    from analysis.layer_summary import Params, layer_summary

    summary = layer_summary(Params(job=job_id), store=store).to_pandas()
    if summary.empty:
        return f"job {job_id}: no records to summarise (a CI needs at least 2 sequences)"
    keys = ["layer", "hook_name"]
    kl = summary.pivot_table(index=keys, columns="intervention", values="kl_mean", sort=False)
    sae = summary[summary.intervention == "sae"].set_index(keys)
    table = pd.DataFrame(index=kl.index)
    table["tokens"] = sae.n_tokens
    for name in ["sae", "eps_random", *[c for c in kl.columns if c not in ("sae", "eps_random")]]:
        table[f"KL {name}"] = kl[name].map("{:.4f}".format)
    table["sae/eps_random [95% CI]"] = [
        f"{r.kl_ratio:.2f} [{r.kl_ratio_lo:.2f}, {r.kl_ratio_hi:.2f}]" for r in sae.itertuples()
    ]
    table["dCE sae"] = sae.loss_delta_mean.map("{:+.4f}".format)
    header = f"job {job_id}: mean KL(clean || patched) per layer and intervention; dCE = mean CE-loss increase"
    return header + "\n" + table.reset_index().to_string(index=False)


def where_records_are(job_id: int, store: Store) -> str:
    config = store.config
    location = config.database_url or str(config.data_dir.resolve())
    example = (
        f'saegap sql "SELECT layer, intervention, avg(kl) AS kl FROM token_records\n'
        f'                     WHERE job_id = {job_id} GROUP BY ALL ORDER BY ALL"'
    )
    return f"records: job {job_id} in {location} (Parquet under {config.lake_data_path()})\nexample: {example}"
