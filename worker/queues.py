"""Queue names, shared by the job API (which sends) and the Celery app and tasks (which consume).

Kept apart from both so neither imports the other for a name, and importing it loads no Celery.
"""

from __future__ import annotations

import re

DEFAULT_QUEUE = "saegap"


def model_queue(model: str) -> str:
    """The queue of one model's tasks: workers started with `--models <model>` take them."""
    return f"{DEFAULT_QUEUE}.{re.sub(r'[^A-Za-z0-9_.-]+', '_', model).strip('_')}"
