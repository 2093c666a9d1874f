"""Start a Celery worker that takes the shards of the models it names (needs SAEGAP_BROKER_URL).

`saegap worker --models demo,gpt2-small` listens on the queue of each model
(`saegap.<model>`) and the default queue `saegap`. One process per worker keeps one model
loaded; --concurrency N > 1 forks N processes, each loading its own copy.
"""

from __future__ import annotations

import argparse
import os

from worker import api
from worker.commands import err


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="demo", help="comma-separated model names this worker serves")
    parser.add_argument("--concurrency", type=int, default=1, help="worker processes (each loads the model)")
    parser.add_argument("--name", default=f"saegap-{os.getpid()}@%h", help="Celery node name")
    parser.add_argument("--loglevel", default="INFO", help="Celery log level")


def queues(models: str) -> list[str]:
    from worker.celery_app import DEFAULT_QUEUE

    return [DEFAULT_QUEUE] + [api.model_queue(name.strip()) for name in models.split(",") if name.strip()]


def run(args: argparse.Namespace) -> int:
    if not api.queue_configured():
        err("no queue: set SAEGAP_BROKER_URL (e.g. redis://localhost:6379/0)")
        return 2
    if args.concurrency < 1:
        err(f"--concurrency must be at least 1, got {args.concurrency}")
        return 2
    from worker.celery_app import app

    pool = "solo" if args.concurrency == 1 else "prefork"  # solo: the task runs in this process, no fork
    argv = ["worker", "-Q", ",".join(queues(args.models)), "--pool", pool, "--concurrency", str(args.concurrency)]
    app.worker_main([*argv, "-n", args.name, "--loglevel", args.loglevel])
    return 0
