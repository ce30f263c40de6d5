"""``loraloop loop ...`` as an owner uses it: status, policy, suites from a file (errors name
the line), challenge, rollback, tick."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraloop.cli import app
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.db.tables import Adapter
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
    first = make_adapter_version(
        db, owner, base, make_tiny_adapter(base_path, tmp_path / "v1"), name="kumo-coffee"
    )
    with db.session() as session:
        adapter = session.get(Adapter, first.adapter_id)
    make_adapter_version(
        db, owner, base, make_tiny_adapter(base_path, tmp_path / "v2", seed=2), adapter=adapter
    )
    db.dispose()
    return tmp_path


def _run(*args: str) -> str:
    result = runner.invoke(app, ["loop", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_policy_shows_and_changes(home: Path) -> None:
    shown = json.loads(_run("policy", "kumo-coffee"))
    assert shown["mode"] == "propose"
    changed = json.loads(_run("policy", "kumo-coffee", "--mode", "auto", "--margin", "0.05"))
    assert (changed["mode"], changed["margin"]) == ("auto", 0.05)
    assert json.loads(_run("policy", "kumo-coffee"))["mode"] == "auto"
    bad = runner.invoke(app, ["loop", "policy", "kumo-coffee", "--mode", "sometimes"])
    assert bad.exit_code == 1
    assert "mode 'sometimes' must be one of auto, propose, off" in bad.output


def test_suite_from_a_file_names_the_bad_line(home: Path) -> None:
    cases = home / "cases.jsonl"
    cases.write_text(
        '{"prompt": "How much is the latte?", "expected": "480"}\n'
        '{"prompt": "Opening hours?", "expected": ""}\n',
        encoding="utf-8",
    )
    bad = runner.invoke(app, ["loop", "suite", "kumo-coffee", "prices", str(cases)])
    assert bad.exit_code == 1
    assert "line 2" in bad.output
    broken = home / "broken.jsonl"
    broken.write_text('{"prompt": "a", "expected": "b"}\n{not json\n', encoding="utf-8")
    bad = runner.invoke(app, ["loop", "suite", "kumo-coffee", "prices", str(broken)])
    assert bad.exit_code == 1
    assert "broken.jsonl:2: not JSON" in bad.output
    cases.write_text('{"prompt": "How much is the latte?", "expected": "480"}\n', encoding="utf-8")
    assert "added 1 cases" in _run("suite", "kumo-coffee", "prices", str(cases))
    status = _run("status", "kumo-coffee")
    assert "kumo-coffee: champion v1" in status


def test_challenge_queues_the_gate_and_rollback_moves_the_champion(home: Path) -> None:
    cases = home / "cases.jsonl"
    cases.write_text('{"prompt": "How much is the latte?", "expected": "480"}\n', encoding="utf-8")
    _run("suite", "kumo-coffee", "prices", str(cases))
    assert "evaluation job" in _run("challenge", "kumo-coffee", "2")
    again = runner.invoke(app, ["loop", "challenge", "kumo-coffee", "2"])
    assert again.exit_code == 1
    assert "is still evaluating" in again.output
    nothing = runner.invoke(app, ["loop", "rollback", "kumo-coffee"])
    assert nothing.exit_code == 1
    assert "only one champion" in nothing.output
    assert "champion is v2 again" in _run("rollback", "kumo-coffee", "--to", "2")
    assert "champion is v1 again" in _run("rollback", "kumo-coffee")
    assert "drift checks queued: 0" in _run("tick")
