"""Alembic migrations of the job database, run programmatically by `upgrade()` on store open."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine

HEAD = "head"
# Alembic's `op` and `context` are module-level proxies, swapped in for each run: two threads migrating two
# stores at once ran one store's CREATE INDEX against the other's database ("no such table: main.shards").
_ALEMBIC = threading.Lock()


def alembic_config(engine: Engine) -> Config:
    """An Alembic Config built in code (no alembic.ini); env.py reads the engine from attributes."""
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = HEAD) -> None:
    with _ALEMBIC:
        command.upgrade(alembic_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with _ALEMBIC:
        command.downgrade(alembic_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
