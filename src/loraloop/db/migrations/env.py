"""Alembic environment: the engine is handed in by ``loraloop.db.migrate``."""

from __future__ import annotations

from alembic import context

from loraloop.db.tables import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
