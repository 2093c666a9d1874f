"""Show one job's status and progress (default: the newest job)."""

from __future__ import annotations

import argparse

from schema.errors import UnknownJobError
from schema.jobs import JobInfo, Progress
from worker import api
from worker.commands import err, out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", nargs="?", type=int, help="job id (default: the newest)")


def run(args: argparse.Namespace) -> int:
    job_id = args.job if args.job is not None else _newest()
    if job_id is None:
        err("no jobs yet")
        return 1
    try:
        job, progress = api.get_job(job_id), api.progress(job_id)
    except UnknownJobError as error:
        err(str(error))
        return 1
    out(describe(job, progress))
    return 0


def _newest() -> int | None:
    newest = api.list_jobs(limit=1)
    return newest[0].id if newest else None


def describe(job: JobInfo, progress: Progress) -> str:
    stale = api.stale_reason(job)
    headline = f"job {job.id}: {job.status}"
    if stale:
        headline += f" (stale: {stale}); `saegap resume {job.id}` reruns its unfinished shards"
    lines = [
        headline,
        f"model {job.spec.model}; SAEs {', '.join(job.spec.saes)}; scope {job.spec.scope.kind}",
        shard_line(progress),
    ]
    if progress.tokens_per_second:
        lines.append(f"{progress.tokens_per_second:,.0f} tokens/s over {progress.elapsed_seconds:.0f}s")
    if progress.eta_seconds is not None and not stale:
        lines.append(f"ETA {progress.eta_seconds:.0f}s")
    if job.error:
        lines.append(f"error: {job.error}")
    lines += [f"warning: {warning}" for warning in job.warnings]  # e.g. a bare .npy: no tokenizer checked
    return "\n".join(lines)


def shard_line(progress: Progress) -> str:
    """Shards and tokens done, the running shards' tokens included, e.g.
    'shards 2/8; shard 3/8 running, 45% of it; tokens 12,288 (5,530 of them in running shards)'."""
    line = f"shards {progress.shards_done}/{progress.shards_total}"
    if progress.shards_running == 1:
        line += f"; shard {progress.shards_done + 1}/{progress.shards_total} running"
    elif progress.shards_running:
        line += f"; {progress.shards_running} shards running"
    if progress.running_fraction is not None:
        line += f", {progress.running_fraction:.0%} of {'it' if progress.shards_running == 1 else 'each on average'}"
    line += f"; tokens {progress.tokens_done + progress.tokens_in_flight:,}"
    if progress.tokens_in_flight:
        line += f" ({progress.tokens_in_flight:,} of them in running shards)"
    return line
