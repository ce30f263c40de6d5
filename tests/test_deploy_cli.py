"""``loraloop deploy ...`` as an operator uses it: create, list, pause, resume, delete."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraloop.cli import app
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.testing import make_tiny_adapter, make_tiny_model
from tests.factories import make_adapter_version, make_base_model, make_user

runner = CliRunner()

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LORALOOP_HOME", str(tmp_path))
    for name in ("LORALOOP_DATABASE_URL", "LORALOOP_CONFIG", "LORALOOP_HOST"):
        monkeypatch.delenv(name, raising=False)
    db = Database(Settings().resolved_database_url)
    upgrade(db.engine)
    owner = make_user(db, email="owner@example.com", role="admin")
    base_path = make_tiny_model(tmp_path / "tiny-base")
    base = make_base_model(db, base_path, name="tiny")
    make_adapter_version(
        db, owner, base, make_tiny_adapter(base_path, tmp_path / "v1"), name="kumo-coffee"
    )
    db.dispose()
    return tmp_path


def test_deploy_lifecycle(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = runner.invoke(app, ["deploy", "create", "kumo", "--adapter", "kumo-coffee"])
    assert created.exit_code == 0, created.output
    assert "kumo -> kumo-coffee@champion" in created.output
    assert "model='kumo'" in created.output
    monkeypatch.setenv("GPU_KEY", "sk-upstream-very-secret")
    upstream = runner.invoke(
        app,
        [
            "deploy",
            "create",
            "gpu",
            "--upstream-url",
            "http://gpu:8000/v1",
            "--upstream-model",
            "m",
            "--upstream-key-env",
            "GPU_KEY",
        ],
    )
    assert upstream.exit_code == 0, upstream.output
    listed = runner.invoke(app, ["deploy", "list"])
    assert "kumo-coffee@champion" in listed.output
    assert "sk-upstream-very-secret" not in listed.output + upstream.output
    assert "paused" in runner.invoke(app, ["deploy", "pause", "1"]).output
    assert " paused " in runner.invoke(app, ["deploy", "list"]).output
    assert runner.invoke(app, ["deploy", "resume", "1"]).exit_code == 0
    assert runner.invoke(app, ["deploy", "delete", "2"]).exit_code == 0
    assert "gpu" not in runner.invoke(app, ["deploy", "list"]).output


ERRORS = [
    (["deploy", "create", "x", "--adapter", "nope"], "you have no adapter named nope"),
    (["deploy", "create", "Bad Name", "--base", "1"], "lowercase letters"),
    (["deploy", "create", "x"], "exactly one target"),
    (["deploy", "pause", "99"], "deployment 99 not found"),
    (
        [
            "deploy",
            "create",
            "x",
            "--upstream-url",
            "http://h/v1",
            "--upstream-model",
            "m",
            "--upstream-key-env",
            "UNSET_VARIABLE_XYZ",
        ],
        "UNSET_VARIABLE_XYZ is not set",
    ),
]


@pytest.mark.parametrize(("args", "message"), ERRORS)
def test_deploy_errors_say_what_to_do(home: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
