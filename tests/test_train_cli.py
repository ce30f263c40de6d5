"""``loraloop train`` and ``loraloop chat`` as a person uses them, on a tiny base model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraloop.cli import app
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.testing import make_tiny_model
from tests.factories import make_base_model, make_user

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LORALOOP_HOME", str(tmp_path))
    for name in ("LORALOOP_DATABASE_URL", "LORALOOP_CONFIG", "LORALOOP_HOST"):
        monkeypatch.delenv(name, raising=False)
    db = Database(Settings().resolved_database_url)
    upgrade(db.engine)
    make_user(db, email="owner@example.com", role="admin")
    base = make_tiny_model(tmp_path / "tiny-base")
    make_base_model(db, base, name="tiny")
    db.dispose()
    return tmp_path


def _data(path: Path, n: int = 16) -> Path:
    rows = [{"instruction": f"Price of item {i}?", "output": f"{i * 10} yen."} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
def test_train_then_chat(home: Path) -> None:
    data = _data(home / "cafe.jsonl")
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--name",
            "cafe",
            "--base",
            "tiny",
            "--preset",
            "quick",
            "--max-steps",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"dataset cafe v1: \d+ training and \d+ validation examples", result.output)
    assert "step 3/3" in result.output
    assert "adapter version 1 ready" in result.output
    chatted = runner.invoke(app, ["chat", "cafe", "--max-new-tokens", "4"], input="hello\n/exit\n")
    assert chatted.exit_code == 0, chatted.output
    assert "cafe v1" in chatted.output


def test_bad_data_is_reported_with_line_numbers(home: Path) -> None:
    data = home / "bad.jsonl"
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    data.write_text(json.dumps(good) + "\n{broken\n")
    result = runner.invoke(app, ["train", "--data", str(data), "--name", "bad", "--base", "tiny"])
    assert result.exit_code == 1
    assert "line 2" in result.output


def test_unknown_base_is_named(home: Path) -> None:
    result = runner.invoke(
        app, ["train", "--data", str(_data(home / "d.jsonl")), "--name", "x", "--base", "nope"]
    )
    assert result.exit_code == 1
    assert "no base model named 'nope'" in result.output
