"""Alembic environment: always run with the connection the application hands over (no alembic.ini, no URL
here), so that the application's own lock serialises workers that start together."""
from __future__ import annotations

from alembic import context

from cds_hooks.storage.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
