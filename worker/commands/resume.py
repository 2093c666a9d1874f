"""Resume a job whose worker died: rerun only its unfinished shards (finished ones keep their records).

Runs here, like `saegap evaluate`, or on the workers when SAEGAP_BROKER_URL is set. A job
that is still running on a live worker is refused unless --force; a done job has nothing to resume.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from schema.errors import JobStateError, UnknownJobError
from worker import api
from worker.commands import err, out
from worker.errors import QueueUnavailable


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=int, help="job id")
    parser.add_argument("--force", action="store_true", help="resume even if the job's worker still reports")


def run(args: argparse.Namespace) -> int:
    try:
        with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints while loading
            job = api.resume(args.job, force=args.force)
    except (UnknownJobError, JobStateError, QueueUnavailable) as error:
        err(str(error))
        return 1
    if job.status in ("done", "queued"):
        out(f"job {job.id}: {job.status} (shards {job.shards_done}/{job.shards_total})")
        return 0
    err(f"job {job.id} {job.status}: {job.error or 'no error recorded'}")
    return 1
