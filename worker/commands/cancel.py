"""Cancel a job: its remaining shards are skipped; records of finished shards stay."""

from __future__ import annotations

import argparse

from schema.errors import UnknownJobError
from worker import api
from worker.commands import err, out


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", type=int, help="job id")


def run(args: argparse.Namespace) -> int:
    try:
        api.cancel(args.job)
        status = api.get_job(args.job).status
    except UnknownJobError as error:
        err(str(error))
        return 1
    out(f"job {args.job}: {status}")
    return 0
