"""Corrections become training candidates (and every fourth a held-out eval case); the owner
decides the others. Evaluation suites: owner cases validated with their numbers, the held-out
suite from a validation split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from loraloop.db.engine import Database
from loraloop.db.tables import EvalCase, EvalSuite, RetrainPolicy, TrainingCandidate
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.mlops import candidates, feedback, suites
from tests.mlops_world import World, add_traces, make_suite, make_world, quick_user


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    return make_world(db, tmp_path, versions=1, visibility="public")


def _correct(
    db: Database, world: World, *, by: Any = None, text: str = "How much is a latte?", **kw: Any
) -> TrainingCandidate | None:
    """A trace of ``by`` (default: the owner) served by v1, then their feedback on it."""
    author = by or world.owner
    [trace] = add_traces(db, author, count=1, version_id=world.version_id(1), texts=[text])
    with db.session() as session:
        row = feedback.give(session, author, trace, **kw)
        return session.scalar(
            select(TrainingCandidate).where(TrainingCandidate.feedback_id == row.id)
        )


def test_the_owners_correction_is_an_accepted_candidate(db: Database, world: World) -> None:
    found = _correct(db, world, rating=-1, correction="480 yen.")
    assert found is not None
    assert found.adapter_id == world.adapter_id
    assert found.messages == [
        {"role": "user", "content": "How much is a latte?"},
        {"role": "assistant", "content": "480 yen."},
    ]
    assert (found.status, found.author_id, found.decided_by) == (
        "accepted",
        world.owner.id,
        world.owner.id,
    )
    assert found.reason == "the owner's own correction"
    assert found.role == ("eval" if found.id % candidates.EVAL_EVERY == 0 else "train")


def test_a_rating_alone_or_an_answer_without_an_adapter_makes_no_candidate(
    db: Database, world: World
) -> None:
    assert _correct(db, world, rating=-1) is None
    [bare] = add_traces(db, world.owner, count=1)  # the base model answered
    with db.session() as session:
        feedback.give(session, world.owner, bare, correction="better")
        assert session.scalar(select(func.count()).select_from(TrainingCandidate)) == 0


def test_one_in_four_is_held_out_in_the_corrections_suite(db: Database, world: World) -> None:
    made = [_correct(db, world, text=f"q{i}", correction=f"a{i}") for i in range(8)]
    assert all(c is not None for c in made)
    roles = {c.id: c.role for c in made if c is not None}
    assert sorted(roles.values()) == ["eval"] * 2 + ["train"] * 6
    assert all((role == "eval") == (cid % 4 == 0) for cid, role in roles.items())
    with db.session() as session:
        suite = session.scalars(select(EvalSuite).where(EvalSuite.name == "corrections")).one()
        assert (suite.kind, suite.metric, suite.adapter_id) == (
            "corrections",
            "rouge_l",
            world.adapter_id,
        )
        cases = session.scalars(select(EvalCase).where(EvalCase.suite_id == suite.id)).all()
        held = {cid for cid, role in roles.items() if role == "eval"}
        assert {c.candidate_id for c in cases} == held
        for case in cases:
            asked = next(m for m in made if m is not None and m.id == case.candidate_id)
            assert case.messages == asked.messages[:-1]
            assert case.expected == asked.messages[-1]["content"]
        trained = candidates.accepted_examples(session, world.adapter_id)
    assert [m[-1]["content"] for m in trained] == [
        c.messages[-1]["content"] for c in made if c is not None and c.role == "train"
    ]


def test_an_untrusted_owner_correction_waits(db: Database, world: World) -> None:
    with db.session() as session:
        session.add(RetrainPolicy(adapter_id=world.adapter_id, trust_owner_corrections=False))
    found = _correct(db, world, correction="480 yen.")
    assert found is not None
    assert (found.status, found.decided_by) == ("pending", None)


def test_someone_elses_correction_waits_for_the_owner(db: Database, world: World) -> None:
    user = quick_user(db)  # serves the public adapter from their own deployment
    found = _correct(db, world, by=user, correction="480 yen.")
    assert found is not None
    assert (found.status, found.author_id) == ("pending", user.id)
    with db.session() as session:
        assert session.scalars(select(EvalCase)).all() == []
        listed = candidates.list_for(session, world.owner, world.adapter_id, "pending")
        assert [c.id for c in listed] == [found.id]
        assert candidates.list_for(session, world.owner, world.adapter_id, "accepted") == []


def _pending(db: Database, world: World, count: int = 1) -> list[int]:
    user = quick_user(db)
    made = [_correct(db, world, by=user, text=f"q{i}", correction=f"a{i}") for i in range(count)]
    return [c.id for c in made if c is not None]


def test_a_rejection_needs_a_reason(db: Database, world: World) -> None:
    [cid] = _pending(db, world)
    for reason in (None, "  "):
        with db.session() as session, pytest.raises(InvalidRequest, match="say why") as raised:
            candidates.decide(session, world.owner, cid, accept=False, reason=reason)
        assert raised.value.param == "reason"
    with db.session() as session:
        row = candidates.decide(session, world.owner, cid, accept=False, reason="wrong price")
        assert (row.status, row.reason, row.decided_by) == (
            "rejected",
            "wrong price",
            world.owner.id,
        )
        assert row.decided_at is not None


def test_a_candidate_is_decided_once(db: Database, world: World) -> None:
    [cid] = _pending(db, world)
    with db.session() as session:
        candidates.decide(session, world.owner, cid, accept=True)
    for accept in (True, False):
        with db.session() as session, pytest.raises(Conflict, match="already accepted"):
            candidates.decide(session, world.owner, cid, accept=accept, reason="again")


def test_accepting_a_held_out_candidate_adds_its_case(db: Database, world: World) -> None:
    ids = _pending(db, world, count=4)
    held = [cid for cid in ids if cid % 4 == 0]
    assert len(held) == 1
    with db.session() as session:
        assert session.scalars(select(EvalCase)).all() == []
        candidates.decide(session, world.owner, held[0], accept=True, reason="good")
        [case] = session.scalars(select(EvalCase)).all()
        assert case.candidate_id == held[0]


def test_nobody_else_decides(db: Database, world: World) -> None:
    [cid] = _pending(db, world)
    stranger = quick_user(db)
    with db.session() as session:
        with pytest.raises(NotFound):
            candidates.decide(session, stranger, cid, accept=True)
        with pytest.raises(NotFound):
            candidates.decide(session, world.owner, 999_999, accept=True)
        with pytest.raises(NotFound):
            candidates.list_for(session, stranger, world.adapter_id)
        row = session.get(TrainingCandidate, cid)
        assert row is not None
        assert row.status == "pending"


def test_count_since_counts_accepted_training_candidates(db: Database, world: World) -> None:
    made = [_correct(db, world, text=f"q{i}", correction=f"a{i}") for i in range(5)]
    trained = [c.id for c in made if c is not None and c.role == "train"]
    with db.session() as session:
        assert candidates.count_since(session, world.adapter_id, 0) == len(trained)
        assert candidates.count_since(session, world.adapter_id, trained[-1]) == 0
        assert candidates.count_since(session, world.adapter_id, trained[0]) == len(trained) - 1


# --- suites ------------------------------------------------------------------------------


def _owner_suite(db: Database, world: World, metric: str = "contains") -> int:
    with db.session() as session:
        return suites.create(
            session, world.owner, world.adapter_id, name="prices", metric=metric
        ).id


def _add(db: Database, world: World, suite_id: int, cases: list[dict[str, Any]]) -> int:
    with db.session() as session:
        return len(suites.add_cases(session, world.owner, suite_id, cases))


def _count(db: Database, suite_id: int) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).where(EvalCase.suite_id == suite_id)) or 0)


def test_good_cases_are_added(db: Database, world: World) -> None:
    suite = _owner_suite(db, world)
    added = _add(
        db,
        world,
        suite,
        [
            {"prompt": "How much is a latte?", "expected": "yen"},
            {
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Opening hours?"},
                ],
                "expected": r"\d+ ?(am|pm)",
                "metric": "regex",
            },
            {"prompt": "Cake?", "expected": ["yes", "sure"]},
        ],
    )
    assert added == 3
    with db.session() as session:
        rows = session.scalars(select(EvalCase).order_by(EvalCase.id)).all()
        assert [r.metric for r in rows] == ["contains", "regex", "contains"]
        assert rows[0].messages == [{"role": "user", "content": "How much is a latte?"}]
        assert [s.name for s, n in suites.list_for(session, world.owner, world.adapter_id)] == [
            "prices"
        ]


def test_bad_cases_are_named_by_number_and_nothing_is_added(db: Database, world: World) -> None:
    suite = _owner_suite(db, world)
    with pytest.raises(InvalidRequest) as raised:
        _add(
            db,
            world,
            suite,
            [
                {"prompt": "fine", "expected": "yen"},
                {"prompt": "bad regex", "expected": "([0-9]+", "metric": "regex"},
                {"prompt": "bad metric", "expected": "x", "metric": "bleu"},
                {"expected": "no prompt"},
                {"prompt": "empty", "expected": ""},
            ],
        )
    message = raised.value.message
    assert raised.value.code == "invalid_cases"
    assert "case 1" not in message
    assert "case 2: expected: the pattern '([0-9]+' does not compile" in message
    assert "case 3: metric: 'bleu' is not one of exact_match, contains, regex, rouge_l" in message
    assert "case 4: give 'prompt' or 'messages' ending with a user turn" in message
    assert "case 5: expected: must be" in message
    assert _count(db, suite) == 0


def test_a_conversation_must_end_with_the_user(db: Database, world: World) -> None:
    suite = _owner_suite(db, world)
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(InvalidRequest, match="case 1: give 'prompt' or 'messages'"):
        _add(db, world, suite, [{"messages": turns, "expected": "x"}])


def test_suites_loraloop_fills_take_no_owner_cases(db: Database, world: World) -> None:
    suite, _ = make_suite(db, world.adapter_id, name="corrections", kind="corrections")
    with pytest.raises(InvalidRequest, match="filled by loraloop"):
        _add(db, world, suite, [{"prompt": "x", "expected": "y"}])


def test_suite_creation_checks_metric_name_and_duplicates(db: Database, world: World) -> None:
    _owner_suite(db, world)
    with db.session() as session:
        with pytest.raises(InvalidRequest, match="metric 'bleu' must be one of") as bad_metric:
            suites.create(session, world.owner, world.adapter_id, name="x", metric="bleu")
        assert bad_metric.value.param == "metric"
        with pytest.raises(InvalidRequest, match="1-64 characters"):
            suites.create(session, world.owner, world.adapter_id, name="   ")
        with pytest.raises(Conflict, match="already has a suite named prices"):
            suites.create(session, world.owner, world.adapter_id, name=" prices ")


def test_suites_are_the_owners(db: Database, world: World) -> None:
    suite = _owner_suite(db, world)
    stranger = quick_user(db)
    with db.session() as session:
        with pytest.raises(NotFound):
            suites.add_cases(session, stranger, suite, [{"prompt": "x", "expected": "y"}])
        with pytest.raises(NotFound):
            suites.create(session, stranger, world.adapter_id, name="mine")
        with pytest.raises(NotFound):
            suites.add_cases(session, world.owner, 999_999, [{"prompt": "x", "expected": "y"}])
    assert _count(db, suite) == 0


def test_the_heldout_suite_comes_from_the_validation_split(
    db: Database, world: World, tmp_path: Path
) -> None:
    from loraloop.db.tables import DatasetVersion

    rows = [
        [{"role": "user", "content": "Latte?"}, {"role": "assistant", "content": "480 yen."}],
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Tea?"},
            {"role": "assistant", "content": "300 yen."},
            {"role": "user", "content": "And cake?"},
            {"role": "assistant", "content": "500 yen."},
        ],
        [{"role": "assistant", "content": "an answer without a question"}],
    ]
    validation = tmp_path / "validation.jsonl"
    validation.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows) + "\n")
    data = DatasetVersion(content_hash="abcdef0123456789" + "0" * 48)
    with db.session() as session:
        suite = suites.ensure_heldout(session, world.adapter_id, data, validation)
        again = suites.ensure_heldout(session, world.adapter_id, data, validation)  # made once
        assert again.id == suite.id
        assert (suite.name, suite.kind, suite.metric) == ("heldout-abcdef01", "heldout", "rouge_l")
        cases = session.scalars(select(EvalCase).where(EvalCase.suite_id == suite.id)).all()
        assert [c.expected for c in cases] == ["480 yen.", "500 yen."]
        assert cases[1].messages == rows[1][:4]
        payload = suites.cases_payload(session, world.adapter_id)
    assert [s["name"] for s in payload] == ["heldout-abcdef01"]
    assert [c["expected"] for c in payload[0]["cases"]] == ["480 yen.", "500 yen."]
