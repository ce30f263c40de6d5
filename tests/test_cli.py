"""The ``loraloop`` command as an operator uses it."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from typer.testing import CliRunner

from loraloop import __version__
from loraloop.cli import app

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LORALOOP_HOME", str(tmp_path))
    for name in ("LORALOOP_DATABASE_URL", "LORALOOP_CONFIG", "LORALOOP_HOST"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_admin_and_key_lifecycle(home: Path) -> None:
    created = runner.invoke(
        app, ["admin", "create", "--email", "Root@Example.com", "--password", "a-long-password"]
    )
    assert created.exit_code == 0, created.output
    issued = runner.invoke(
        app, ["keys", "create", "--user", "root@example.com", "--name", "ci", "--scope", "manage"]
    )
    assert issued.exit_code == 0, issued.output
    secret = re.search(r"(ll_\w+_\S+)", issued.output)
    assert secret is not None
    listed = runner.invoke(app, ["keys", "list", "--user", "root@example.com"])
    assert "active" in listed.output
    assert secret.group(1) not in listed.output  # the secret is never shown again
    revoked = runner.invoke(app, ["keys", "revoke", "1", "--user", "root@example.com"])
    assert revoked.exit_code == 0
    assert "revoked" in runner.invoke(app, ["keys", "list", "--user", "root@example.com"]).output


ERRORS = [
    (["admin", "create", "--email", "bad", "--password", "short"], "not an email address"),
    (["keys", "list", "--user", "nobody@example.com"], "no account with email nobody@example.com"),
]


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_errors_are_clear(home: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output


def test_unsafe_bind_is_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORALOOP_HOST", "0.0.0.0")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 1
    assert "LORALOOP_REGISTRATION" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_up_starts_and_prints_the_admin_link(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORALOOP_")}
    env["LORALOOP_HOME"] = str(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "loraloop.cli", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/signin", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        else:
            pytest.fail("loraloop up did not answer within 60 s")
        assert page.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"http://127.0.0.1:{port}/signup?invite=" in output
    assert (tmp_path / "loraloop.db").exists()
    assert (tmp_path / "secret.key").exists()
