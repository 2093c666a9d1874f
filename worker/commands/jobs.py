"""List recent jobs, newest first (a running job whose worker is gone shows as stale)."""

from __future__ import annotations

import argparse

from worker import api
from worker.commands import out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20, help="how many (default 20)")


def run(args: argparse.Namespace) -> int:
    found = api.list_jobs(limit=args.limit)
    out(f"{'id':>5}  {'status':<9}  {'shards':>9}  {'tokens':>11}  {'created (UTC)':<19}  model / SAEs")
    stale = [job.id for job in found if api.stale_reason(job)]
    for job in found:
        shards = f"{job.shards_done}/{job.shards_total}"
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        what = f"{job.spec.model} / {', '.join(job.spec.saes)}"
        status = "stale" if job.id in stale else job.status
        out(f"{job.id:>5}  {status:<9}  {shards:>9}  {job.tokens_done:>11,}  {created:<19}  {what}")
    if stale:
        out("stale: planning or running, but its worker is gone or silent; `saegap status JOB` says which, "
            "`saegap resume JOB` reruns its unfinished shards")  # fmt: skip
    return 0
