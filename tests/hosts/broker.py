"""Point this process's Celery app at the broker of the current environment."""

from __future__ import annotations


def use_env_broker() -> None:
    """worker.celery_app.apply_env, then drop the producer pool the app caches: without that a task sent
    after the switch still goes to the broker of the first send (Celery keeps `amqp._producer_pool`,
    which app.close() does not reset when the app never built its connection pool)."""
    from worker.celery_app import app, apply_env

    apply_env(app)
    app.amqp._producer_pool = None
    app.close()
