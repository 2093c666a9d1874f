"""Point this process's Celery app at the broker of a test's environment, and back."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import redis


def use_env_broker() -> None:
    """worker.celery_app.apply_env (which also drops the app's cached producer pool and connections)."""
    from worker.celery_app import app, apply_env

    apply_env(app)


@contextmanager
def broker_env(values: dict[str, str]) -> Iterator[dict[str, str]]:
    """Set `values` (SAEGAP_BROKER_URL among them) in os.environ on an emptied Redis db, point the app at
    it, and yield the environment for worker subprocesses; restore both afterwards and empty the db."""
    broker = redis.Redis.from_url(values["SAEGAP_BROKER_URL"])
    broker.flushdb()
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    use_env_broker()  # this process imported the app before the env pointed at the test broker
    try:
        yield {**os.environ, "HF_HUB_OFFLINE": "1"}
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
        use_env_broker()
        broker.flushdb()
