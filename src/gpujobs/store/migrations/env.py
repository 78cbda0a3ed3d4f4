"""Alembic environment: run against the connection gpujobs hands over (see database.migrate)."""

from alembic import context

from gpujobs.store.orm import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
