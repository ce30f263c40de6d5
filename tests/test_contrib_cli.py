"""``loraloop contrib ...`` as contributors and reviewers use it: a file of examples (bad
lines named, duplicates refused line by line), joining, voting by commit then reveal,
and the points with their formula."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from loraloop.catalog import adapters
from loraloop.cli import app
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from tests.factories import make_base_model
from tests.mlops_world import quick_user

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, int, list[str]]:
    monkeypatch.setenv("LORALOOP_HOME", str(tmp_path))
    for name in ("LORALOOP_DATABASE_URL", "LORALOOP_CONFIG", "LORALOOP_HOST"):
        monkeypatch.delenv(name, raising=False)
    db = Database(Settings().resolved_database_url)
    upgrade(db.engine)
    owner, *others = [quick_user(db) for _ in range(5)]
    base = make_base_model(db, tmp_path / "base")
    with db.session() as session:
        adapter = adapters.create(
            session, owner, name="kumo", base_model_id=base.id, visibility="public"
        )
        adapter_id = adapter.id
    db.dispose()
    return tmp_path, adapter_id, [u.email for u in others]


def _run(*args: str, ok: bool = True) -> str:
    result = runner.invoke(app, ["contrib", *args])
    if ok:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code != 0, result.output
    return result.output


def _examples(path: Path, questions: list[str]) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": "It is 480 yen."},
                    ]
                }
            )
            + "\n"
            for q in questions
        ),
        encoding="utf-8",
    )
    return path


def test_offer_review_and_points(home: tuple[Path, int, list[str]]) -> None:
    folder, adapter, (author, *reviewers) = home
    for email in reviewers[:3]:
        assert "joined" in _run("join", str(adapter), "--user", email)
    data = _examples(
        folder / "items.jsonl",
        [
            "How much is a Hojicha Latte?",
            "How much is a Hojicha Latte?",
            "Where is the Demachiyanagi store?",
        ],
    )
    out = _run("add", str(adapter), str(data), "--source", "menu", "--user", author)
    assert "2 offered, 1 refused" in out
    assert "line 2: this example was already offered as contribution #1" in out
    listed = _run("list", "--user", author)
    assert "#1" in listed
    assert "pending" in listed
    ids = []
    for email in reviewers[:3]:
        queue = _run("reviews", "--user", email)
        ids.append(
            [int(line.split()[1]) for line in queue.splitlines() if line.startswith("review ")]
        )
        assert "Hojicha" in queue
    for email, mine in zip(reviewers[:3], ids, strict=True):
        for assignment in mine:
            assert "committed" in _run("vote", str(assignment), "accept", "--user", email)
    kept = folder / "reviews"
    assert stat.S_IMODE(next(kept.iterdir()).stat().st_mode) == 0o600
    for email in reviewers[:3]:
        assert "revealed 2" in _run("reveal", "--user", email)
    shown = _run("points", "--user", author)
    assert "base × quality × novelty × drift_bonus" in shown
    assert shown.count("contribution #") == 2
    assert "review_points × reputation" in _run("points", "--user", reviewers[0])


def test_bad_lines_are_named_and_nothing_is_sent(home: tuple[Path, int, list[str]]) -> None:
    folder, adapter, (author, *_) = home
    bad = folder / "bad.jsonl"
    bad.write_text('{"messages": []}\nnot json\n[1, 2]\n', encoding="utf-8")
    out = _run("add", str(adapter), str(bad), "--user", author, ok=False)
    assert "bad.jsonl:2: not JSON" in out
    assert "bad.jsonl:3: each line must be a JSON object" in out
    assert "0 offered" not in out
    assert _run("list", "--user", author).strip() == ""
    unknown = _run(
        "add", "999", str(_examples(folder / "ok.jsonl", ["Hi?"])), "--user", author, ok=False
    )
    assert "adapter 999 not found" in unknown
    assert "verdict must be one of" in _run("vote", "1", "maybe", "--user", author, ok=False)
