"""Alembic environment: online migrations only, on the engine the store passes in."""

from __future__ import annotations

from alembic import context

from schema.tables import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    # render_as_batch: SQLite alters tables by copying them; PostgreSQL ignores it.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
