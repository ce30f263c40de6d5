"""Fixtures: every database test runs on SQLite, and on PostgreSQL when
``LORALOOP_TEST_DATABASE_URL`` is set (CI sets it, plus ``LORALOOP_REQUIRE_POSTGRES=1`` so a
missing server fails instead of skipping)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.db.tables import Base

PG_URL = os.environ.get("LORALOOP_TEST_DATABASE_URL", "")
REQUIRE_PG = os.environ.get("LORALOOP_REQUIRE_POSTGRES") == "1"
STARTUP_SECONDS = 15


@pytest.fixture(
    scope="session",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("LORALOOP_REQUIRE_POSTGRES=1 but LORALOOP_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need LORALOOP_TEST_DATABASE_URL")
    return PG_URL


_migrated: set[str] = set()


def _reset(db: Database) -> None:
    with db.engine.begin() as conn:
        if db.dialect == "postgresql":
            names = ", ".join(t.name for t in Base.metadata.sorted_tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    if database_url not in _migrated:
        if database.dialect == "postgresql":
            with database.engine.begin() as conn:  # a clean schema, then every migration
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade(database.engine)
        _migrated.add(database_url)
    _reset(database)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        env="development",
        home=tmp_path / "home",
        database_url=database_url,
        secret_key="test-secret-key-not-default",
    )


@pytest.fixture
def app(settings: Settings, db: Database) -> FastAPI:
    return create_app(settings, db)


@contextmanager
def _no_server_errors(app: FastAPI) -> Iterator[TestClient]:
    """A test client that fails the test if any response was a 5xx: no 500 in the suite."""
    server_errors: list[str] = []

    def check(response: httpx.Response) -> None:
        if response.status_code >= 500:
            server_errors.append(f"{response.request.method} {response.request.url}")

    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        test_client.event_hooks["response"].append(check)
        yield test_client
    assert not server_errors, f"server errors: {server_errors}"


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with _no_server_errors(app) as test_client:
        yield test_client


@pytest.fixture
def other_client(app: FastAPI) -> Iterator[TestClient]:
    """A second browser, for tests where two users act at once."""
    with _no_server_errors(app) as test_client:
        yield test_client


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_healthy(url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if not thread.is_alive():
            pytest.fail("the test server stopped while starting; see the log above")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"the test server did not answer {url} within {STARTUP_SECONDS}s")


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on a free loopback port; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_healthy(f"{base}/healthz", thread)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test server did not stop"


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The base URL of ``app`` served by a real uvicorn on a free loopback port."""
    with serve(app) as base:
        yield base
