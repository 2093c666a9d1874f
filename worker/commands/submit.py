"""Queue a job for the workers and print its id (needs SAEGAP_BROKER_URL).

Same flags as `saegap evaluate`; without --n-sequences the whole token set is used.
Follow it with `saegap status JOB`. If the broker cannot take the job, nothing is stored.
"""

from __future__ import annotations

import argparse

from worker import api
from worker.commands import err, out, spec_args
from worker.errors import QueueUnavailable


def configure(parser: argparse.ArgumentParser) -> None:
    spec_args.configure(parser)


def run(args: argparse.Namespace) -> int:
    try:
        spec = spec_args.spec_from_args(args)
        refusal = spec_args.size_refusal(spec, args)
        if refusal:
            err(refusal)
            return 2
        job_id = api.start(spec, where="queue", wait=False).job_id
    except (spec_args.SpecError, api.QueueNotConfigured, QueueUnavailable) as error:
        err(str(error))
        return 2
    out(str(job_id))
    return 0
