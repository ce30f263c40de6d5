"""The Alembic migrations build exactly the schema the tables describe, on both databases."""

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from loraloop.db import Database, upgrade
from loraloop.db.migrate import alembic_config
from loraloop.db.tables import Base


def test_migrations_match_the_tables(db: Database) -> None:
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], f"write a migration for: {diff}"


def test_sqlite_pragmas(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    db.dispose()


def test_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'm.db'}")
    upgrade(db.engine)
    upgrade(db.engine)  # idempotent
    tables = set(inspect(db.engine).get_table_names())
    assert {"users", "api_keys", "jobs", "job_events", "web_sessions"} <= tables
    command.downgrade(alembic_config(db.engine), "base")
    assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
    upgrade(db.engine)
    assert set(inspect(db.engine).get_table_names()) == tables
    db.dispose()
