"""Point this process's Celery app at the broker of the current environment."""

from __future__ import annotations


def use_env_broker() -> None:
    """worker.celery_app.apply_env (which also drops the app's cached producer pool and connections)."""
    from worker.celery_app import app, apply_env

    apply_env(app)
