"""The Celery app: broker and result backend from the environment, nothing else at import.

SAEGAP_BROKER_URL (e.g. redis://redis:6379/0) and SAEGAP_RESULT_BACKEND (defaults to the
broker). Shards are acknowledged late, so a worker that dies mid-shard leaves its
message to be redelivered; on Redis that happens after SAEGAP_VISIBILITY_TIMEOUT seconds,
which must exceed the longest shard (a shard redelivered while still running is
recomputed and replaces itself: wasted time, never a duplicate row).
"""

from __future__ import annotations

import os

from celery import Celery

from worker.queues import DEFAULT_QUEUE

_DEFAULT_VISIBILITY_TIMEOUT_S = 3600


def _broker_url() -> str:
    return os.environ.get("SAEGAP_BROKER_URL") or "memory://"


def apply_env(celery: Celery) -> None:
    """Broker, backend and visibility timeout from the environment (read at import; call again after changing it)."""
    broker = _broker_url()
    celery.conf.update(
        broker_url=broker,
        result_backend=os.environ.get("SAEGAP_RESULT_BACKEND") or os.environ.get("SAEGAP_BROKER_URL") or None,
        broker_transport_options={
            "visibility_timeout": int(os.environ.get("SAEGAP_VISIBILITY_TIMEOUT", _DEFAULT_VISIBILITY_TIMEOUT_S))
        },
    )
    # Celery caches its producer pool on first send and app.close() does not drop it when no
    # connection pool was built: without this a task sent after a broker change goes to the old broker.
    celery.amqp._producer_pool = None
    celery.close()


app = Celery("saegap", include=["worker.tasks"])
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=DEFAULT_QUEUE,
    task_acks_late=True,  # a message is acknowledged after its shard is written, not when received
    task_reject_on_worker_lost=True,  # a killed pool process puts its shard back on the queue
    task_acks_on_failure_or_timeout=True,  # a failure we recorded in the store is final; do not loop on it
    worker_prefetch_multiplier=1,  # one shard at a time per process: others stay free for other workers
    worker_hijack_root_logger=False,
    result_expires=3600,
    broker_connection_retry_on_startup=True,
)
apply_env(app)
