"""Community contributions through the services: refusals, commit-reveal, quorum, fixes,
gold items, deadlines, wallets, corrections, impact, and the ledger's idempotency."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from loraloop.catalog import aliases
from loraloop.config import Settings
from loraloop.contributions import items, points, reputation, review, rules, settle, standings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import (
    Contribution,
    EvalCase,
    GateDecision,
    PointsEntry,
    ReputationEvent,
    RetrainRun,
    ReviewAssignment,
    TrainingCandidate,
    User,
    WalletLink,
)
from loraloop.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, RateLimited
from loraloop.mlops import events, loop, promotion
from loraloop.storage import Storage
from tests.mlops_world import World, add_version, make_world, quick_user


@pytest.fixture
def storage(settings: Settings) -> Storage:
    return Storage(settings.home / "artifacts")


@pytest.fixture
def world(db: Database, tmp_path: Path) -> World:
    return make_world(db, tmp_path, versions=1, visibility="public")


def _example(question: str, answer: str = "It is 480 yen.") -> dict[str, object]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def _reviewers(db: Database, world: World, n: int) -> list[User]:
    people = [quick_user(db) for _ in range(n)]
    with db.session() as session:
        for person in people:
            items.enrol(session, person, world.adapter_id, reviewer=True)
    return people


def _offer(
    db: Database,
    settings: Settings,
    storage: Storage,
    world: World,
    author: User,
    question: str = "How much is a Sakura Latte?",
    answer: str = "It is 660 yen.",
) -> int:
    with db.session() as session:
        return items.submit(
            session,
            settings,
            storage,
            author,
            world.adapter_id,
            kind="example",
            item=_example(question, answer),
            source="menu board",
        ).id


def _assignments(db: Database, contribution_id: int) -> list[ReviewAssignment]:
    with db.session() as session:
        return list(
            session.scalars(
                select(ReviewAssignment)
                .where(ReviewAssignment.contribution_id == contribution_id)
                .order_by(ReviewAssignment.id)
            )
        )


def _vote(
    db: Database,
    settings: Settings,
    by: dict[int, User],
    contribution_id: int,
    verdicts: list[str],
    edited: list[dict[str, str]] | None = None,
) -> None:
    """Every drawn reviewer commits, then every one reveals (in that order)."""
    drawn = [a for a in _assignments(db, contribution_id) if a.state == "assigned"]
    assert len(drawn) == len(verdicts)
    for a, verdict in zip(drawn, verdicts, strict=True):
        edit = edited if verdict == "fix" else None
        with db.session() as session:
            review.commit(
                session,
                settings,
                by[a.reviewer_id],
                a.id,
                review.commitment_of(a.id, verdict, f"salt-{a.id}", edit),
            )
    for a, verdict in zip(drawn, verdicts, strict=True):
        with db.session() as session:
            review.reveal(
                session,
                settings,
                by[a.reviewer_id],
                a.id,
                verdict=verdict,
                salt=f"salt-{a.id}",
                edited=edited if verdict == "fix" else None,
            )


def _status(db: Database, contribution_id: int) -> Contribution:
    with db.session() as session:
        row = session.get(Contribution, contribution_id)
        assert row is not None
        return row


def test_accepted_example_reaches_training_and_pays_author_and_agreeing_reviewers(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author, *people = [quick_user(db), *_reviewers(db, world, 3)]
    by = {p.id: p for p in people}
    item = _offer(db, settings, storage, world, author)
    drawn = _assignments(db, item)
    assert {a.reviewer_id for a in drawn} == set(by)  # the author is never drawn
    _vote(db, settings, by, item, ["accept", "accept", "reject"])
    row = _status(db, item)
    assert row.status == "accepted"
    assert row.decided_via == "consensus"
    assert row.decision is not None
    assert row.decision["share"] == pytest.approx(2 / 3, abs=1e-3)
    with db.session() as session:
        candidate = session.get(TrainingCandidate, row.candidate_id)
        assert candidate is not None
        assert candidate.status == "accepted"
        assert candidate.role == "train"
        assert candidate.messages[-1]["content"] == "It is 660 yen."
        total, lines = standings.my_points(session, author)
        assert len(lines) == 1
        assert lines[0].entry.kind == "contribution"
        breakdown = lines[0].entry.breakdown
        expected = rules.BASE_POINTS["example"] * breakdown["quality"] * breakdown["novelty"]
        assert total == rules.millipoints(expected * breakdown["drift_bonus"])
        assert breakdown["quality"] == pytest.approx(2 / 3, abs=1e-3)
        assert lines[0].source == {
            "type": "contribution",
            "id": item,
            "kind": "example",
            "status": "accepted",
            "decided_at": row.decided_at,
        }
        paid = {p.id: ledger_total(session, p.id) for p in people}
    rejecter = next(a.reviewer_id for a in _assignments(db, item) if a.verdict == "reject")
    assert paid[rejecter] == 0
    assert all(v > 0 for u, v in paid.items() if u != rejecter)


def ledger_total(session, user_id: int) -> int:  # type: ignore[no-untyped-def]
    from loraloop.rewards import ledger

    return ledger.total(session, user_id)


def test_duplicates_are_refused_with_a_pointer(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author, copier = quick_user(db), quick_user(db)
    first = _offer(db, settings, storage, world, author)
    with pytest.raises(Conflict, match=f"#{first}") as exact:
        _offer(db, settings, storage, world, copier)
    assert exact.value.code == "duplicate"
    with pytest.raises(Conflict, match=f"#{first}") as near:
        _offer(db, settings, storage, world, copier, question="How much is a Sakura Latte??")
    assert near.value.code == "near_duplicate"
    other = _offer(db, settings, storage, world, copier, question="Where is the Kyoto store?")
    assert other != first
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Contribution)) == 2


def test_bad_items_and_access(
    db: Database, settings: Settings, storage: Storage, tmp_path: Path
) -> None:
    private = make_world(db, tmp_path, versions=1)
    stranger, guest = quick_user(db), quick_user(db)
    with db.session() as session, pytest.raises(NotFound):
        items.submit(
            session,
            settings,
            storage,
            stranger,
            private.adapter_id,
            kind="example",
            item=_example("Hello?"),
        )
    with db.session() as session:
        items.invite(session, private.owner, private.adapter_id, guest.email)
    with db.session() as session, pytest.raises(InvalidRequest, match="no assistant turn"):
        items.submit(
            session,
            settings,
            storage,
            guest,
            private.adapter_id,
            kind="example",
            item={"messages": [{"role": "user", "content": "only a question"}]},
        )
    with db.session() as session, pytest.raises(InvalidRequest, match="metric"):
        items.submit(
            session,
            settings,
            storage,
            guest,
            private.adapter_id,
            kind="eval_case",
            item={"prompt": "Price?", "expected": "660", "metric": "vibes"},
        )
    with db.session() as session, pytest.raises(InvalidRequest, match="feedback"):
        items.submit(
            session,
            settings,
            storage,
            guest,
            private.adapter_id,
            kind="correction",
            item=_example("x?"),
        )
    with db.session() as session:
        row = items.submit(
            session,
            settings,
            storage,
            guest,
            private.adapter_id,
            kind="eval_case",
            item={"prompt": "Price of tea?", "expected": "500"},
        )
        assert row.status == "pending"
        assert row.metric == "contains"
        with pytest.raises(NotFound):
            items.get(session, stranger, row.id)
        with pytest.raises(NotFound):
            standings.leaderboard(session, stranger, private.adapter_id)


def test_rate_limit_says_when_to_retry(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    tight = settings.model_copy(update={"contributions_per_hour": 2})
    for n in range(2):
        _offer(db, tight, storage, world, author, question=f"Question number {n} about beans?")
    with pytest.raises(RateLimited, match="limit is 2") as limited:
        _offer(db, tight, storage, world, author, question="Is the Kyoto store open late?")
    assert 3500 <= limited.value.retry_after <= 3601


def test_commit_reveal_rules(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    people = _reviewers(db, world, 3)
    by = {p.id: p for p in people}
    item = _offer(db, settings, storage, world, author)
    first, second, third = _assignments(db, item)
    me = by[first.reviewer_id]
    with db.session() as session, pytest.raises(NotFound):
        review.commit(session, settings, by[second.reviewer_id], first.id, "a" * 64)
    with db.session() as session, pytest.raises(InvalidRequest, match="64-character"):
        review.commit(session, settings, me, first.id, "not a hash")
    with db.session() as session:
        review.commit(
            session, settings, me, first.id, review.commitment_of(first.id, "accept", "s1")
        )
    with db.session() as session, pytest.raises(Conflict, match="cannot change"):
        review.commit(session, settings, me, first.id, "b" * 64)
    with db.session() as session, pytest.raises(Conflict, match="2 still to commit"):
        review.reveal(session, settings, me, first.id, verdict="accept", salt="s1")
    with db.session() as session, pytest.raises(PermissionDenied, match="sealed"):
        review.verdicts(session, me, item)
    for a in (second, third):
        with db.session() as session:
            review.commit(
                session,
                settings,
                by[a.reviewer_id],
                a.id,
                review.commitment_of(a.id, "accept", "s"),
            )
    with db.session() as session, pytest.raises(InvalidRequest, match="do not hash"):
        review.reveal(session, settings, me, first.id, verdict="reject", salt="s1")
    with db.session() as session:
        review.reveal(session, settings, me, first.id, verdict="accept", salt="s1")
    assert _status(db, item).status == "pending"  # two reveals to go
    for a in (second, third):
        with db.session() as session:
            review.reveal(session, settings, by[a.reviewer_id], a.id, verdict="accept", salt="s")
    assert _status(db, item).status == "accepted"
    nobody = quick_user(db)
    with db.session() as session:
        seen = review.verdicts(session, me, item)
        assert [v.verdict for v in seen] == ["accept"] * 3
        with pytest.raises(NotFound):  # someone who had no part in it
            review.verdicts(session, nobody, item)


def test_a_winning_fix_is_what_gets_trained(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    by = {p.id: p for p in _reviewers(db, world, 3)}
    item = _offer(db, settings, storage, world, author, answer="It is 600 yen.")
    fixed = [
        {"role": "user", "content": "How much is a Sakura Latte?"},
        {"role": "assistant", "content": "It is 660 yen (tax included)."},
    ]
    _vote(db, settings, by, item, ["fix", "fix", "accept"], edited=fixed)
    row = _status(db, item)
    assert row.status == "accepted"
    assert row.final == fixed
    with db.session() as session:
        candidate = session.get(TrainingCandidate, row.candidate_id)
        assert candidate is not None
        assert candidate.messages == fixed
        entry = session.scalar(
            select(PointsEntry).where(
                PointsEntry.source_id == item, PointsEntry.kind == "contribution"
            )
        )
        assert entry is not None
        assert entry.breakdown["quality"] == pytest.approx((1 + 0.5 * 2) / 3, abs=1e-3)


def test_without_a_quorum_more_reviewers_are_drawn_then_it_is_rejected(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    split = settings.model_copy(update={"review_k": 2, "review_max": 4, "review_quorum": 0.7})
    author = quick_user(db)
    by = {p.id: p for p in _reviewers(db, world, 5)}
    item = _offer(db, split, storage, world, author)
    _vote(db, split, by, item, ["accept", "reject"])
    assert _status(db, item).status == "pending"
    assert len(_assignments(db, item)) == 4  # two more drawn
    _vote(db, split, by, item, ["accept", "reject"])
    row = _status(db, item)
    assert row.status == "rejected"
    assert "no consensus" in (row.reason or "")


def test_shared_wallets_are_never_drawn_together(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    people = _reviewers(db, world, 6)
    with db.session() as session:  # a sock puppet of the author, and two twins
        session.add(WalletLink(user_id=author.id, address="0x" + "a" * 40))
        session.add(WalletLink(user_id=people[0].id, address="0x" + "A" * 40))
        # one address is linked to one account at a time: the first twin moved on since
        session.add(WalletLink(user_id=people[1].id, address="0x" + "b" * 40, unlinked_at=utcnow()))
        session.add(WalletLink(user_id=people[2].id, address="0x" + "b" * 40))
    for n in range(8):
        monkey = random.Random(n)
        with db.session() as session:
            row = items.submit(
                session,
                settings,
                storage,
                author,
                world.adapter_id,
                kind="example",
                item=_example(f"Question {n} about cups {n}?"),
            )
            for a in session.scalars(
                select(ReviewAssignment).where(ReviewAssignment.contribution_id == row.id)
            ):
                session.delete(a)
            session.flush()
            drawn = {a.reviewer_id for a in review.staff(session, settings, row, rng=monkey)}
        assert people[0].id not in drawn
        assert not {people[1].id, people[2].id} <= drawn
        assert len(drawn) == 3


def test_gold_items_score_reviewers_round_after_round(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    people = _reviewers(db, world, 6)
    by = {p.id: p for p in people}
    with db.session() as session:
        gold = items.add_gold(
            session,
            settings,
            world.owner,
            world.adapter_id,
            kind="example",
            item=_example("Do you sell bicycles?", "Yes, many."),
            verdict="reject",
        ).id
    _vote(db, settings, by, gold, ["reject", "reject", "accept"])
    first_round = _assignments(db, gold)[:3]
    assert [a.matched for a in first_round] == [True, True, False]
    second = [a for a in _assignments(db, gold) if a.state == "assigned"]
    assert len(second) == 3
    assert not {a.reviewer_id for a in second} & {a.reviewer_id for a in first_round}
    assert _status(db, gold).status == "gold"
    with db.session() as session:
        wrong = next(a.reviewer_id for a in first_round if not a.matched)
        assert reputation.standing(session, wrong).gold_seen == 1
        assert reputation.standing(session, wrong).gold_correct == 0
        with pytest.raises(PermissionDenied):  # gold verdicts never shown to reviewers
            review.verdicts(session, by[wrong], gold)
        with pytest.raises(NotFound):  # nor the item itself to anyone but the owner
            items.get(session, by[wrong], gold)


def test_late_reviewers_are_replaced_and_silent_ones_lose_reputation(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    by = {p.id: p for p in _reviewers(db, world, 6)}
    item = _offer(db, settings, storage, world, author)
    a, b, _c = _assignments(db, item)
    for x in (a, b):
        with db.session() as session:
            review.commit(
                session,
                settings,
                by[x.reviewer_id],
                x.id,
                review.commitment_of(x.id, "accept", "s"),
            )
    later = utcnow() + timedelta(hours=settings.review_commit_hours + 1)
    with db.session() as session:
        done = review.maintain(session, settings, storage, now=later)
    assert done.expired == 1
    assert done.drawn == 1
    replacement = next(x for x in _assignments(db, item) if x.state == "assigned")
    with db.session() as session:
        review.commit(
            session,
            settings,
            by[replacement.reviewer_id],
            replacement.id,
            review.commitment_of(replacement.id, "accept", "s"),
            now=later,
        )
    with db.session() as session:
        review.reveal(
            session, settings, by[a.reviewer_id], a.id, verdict="accept", salt="s", now=later
        )
    much_later = later + timedelta(hours=settings.review_reveal_hours + 1)
    with db.session() as session:
        review.maintain(session, settings, storage, now=much_later)
        silent = session.scalars(
            select(ReputationEvent).where(ReputationEvent.kind == "silent")
        ).all()
        assert {e.user_id for e in silent} == {b.reviewer_id, replacement.reviewer_id}
        assert all(e.good == 0 for e in silent)
    assert _status(db, item).status == "pending"  # two fresh reviewers are drawn instead
    assert sum(x.state == "assigned" for x in _assignments(db, item)) == 2


def test_owner_decides_directly_and_reviewers_who_revealed_are_scored(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    people = _reviewers(db, world, 3)
    item = _offer(db, settings, storage, world, author)
    with db.session() as session, pytest.raises(PermissionDenied):
        items.decide(session, people[0], item, accept=True)
    with db.session() as session, pytest.raises(InvalidRequest, match="say why"):
        items.decide(session, world.owner, item, accept=False)
    with db.session() as session:
        items.decide(session, world.owner, item, accept=False, reason="wrong price")
    row = _status(db, item)
    assert row.status == "rejected"
    assert row.decided_via == "owner"
    assert all(a.state == "cancelled" for a in _assignments(db, item))
    with db.session() as session, pytest.raises(Conflict):
        items.decide(session, world.owner, item, accept=True)
        # the owner's own item is accepted at once and earns nothing
    with db.session() as session:
        own = items.submit(
            session,
            settings,
            storage,
            world.owner,
            world.adapter_id,
            kind="example",
            item=_example("Do you have oat milk?", "Yes."),
        )
        assert own.status == "accepted"
        assert ledger_total(session, world.owner.id) == 0


def test_replaying_a_decision_or_a_promotion_writes_nothing_twice(
    db: Database, settings: Settings, storage: Storage, world: World, tmp_path: Path
) -> None:
    author = quick_user(db)
    by = {p.id: p for p in _reviewers(db, world, 3)}
    item = _offer(db, settings, storage, world, author)
    _vote(db, settings, by, item, ["accept"] * 3)
    v2 = add_version(db, world, tmp_path / "v2")
    with db.session() as session:
        row = session.get(Contribution, item)
        assert row is not None
        session.add(
            RetrainRun(
                adapter_id=world.adapter_id,
                trigger="examples",
                status="promoted",
                detail={"candidates_through": row.candidate_id},
                challenger_version_id=v2,
            )
        )
        decision = GateDecision(
            adapter_id=world.adapter_id,
            champion_version_id=world.version_id(1),
            challenger_version_id=v2,
            outcome="promote",
            reason="better",
            numbers={"pooled": {"delta": 0.1}},
        )
        session.add(decision)
        session.flush()
        promotion.promote(session, world.adapter_id, v2, cause="gate", decision=decision)
        assert aliases.current(session, world.adapter_id, "champion").id == v2  # type: ignore[union-attr]
        before = session.scalar(select(func.count()).select_from(PointsEntry))
        impact = session.scalars(select(PointsEntry).where(PointsEntry.kind == "impact")).all()
        assert len(impact) == 1
        assert impact[0].user_id == author.id
        assert impact[0].millipoints == rules.millipoints(rules.IMPACT_POINTS_PER_GAIN * 0.1)
        # replay: the promotion event, the decision, every review score
        events.publish(
            "promoted", session, adapter_id=world.adapter_id, version_id=v2, decision=decision
        )
        points.award_impact(session, world.adapter_id, v2, decision)
        again = GateDecision(
            adapter_id=world.adapter_id,
            champion_version_id=world.version_id(1),
            challenger_version_id=v2,
            outcome="promote",
            reason="the owner promoted it again",
            numbers=decision.numbers,
            override_of=decision.id,
        )
        session.add(again)
        session.flush()
        promotion.promote(session, world.adapter_id, v2, cause="override", decision=again)
        settle.finalize(session, row, accepted=True, via="consensus")
        settle.score_reviews(session, row, "accept")
        points.award_item(session, row, 1.0)
        for a in session.scalars(select(ReviewAssignment)):
            points.award_review(session, row, a)
        assert session.scalar(select(func.count()).select_from(PointsEntry)) == before
        assert session.scalar(select(func.count()).select_from(TrainingCandidate)) == 1


def test_every_point_traces_back_to_its_event(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    author = quick_user(db)
    people = _reviewers(db, world, 3)
    by = {p.id: p for p in people}
    for n in range(3):
        item = _offer(
            db,
            settings,
            storage,
            world,
            author,
            question=f"Is store {n} open on {['Monday', 'Friday', 'Sunday'][n]}?",
        )
        _vote(db, settings, by, item, ["accept", "accept", "reject" if n else "accept"])
    with db.session() as session:
        for user in (author, *people):
            total, lines = standings.my_points(session, user)
            assert total == sum(line.entry.millipoints for line in lines)
            for line in lines:
                assert line.source is not None
                if line.source["type"] == "review":
                    a = session.get(ReviewAssignment, line.source["id"])
                    assert a is not None
                    assert a.reviewer_id == user.id
                    assert a.matched
                else:
                    c = session.get(Contribution, line.source["id"])
                    assert c is not None
                    assert c.author_id == user.id
                    assert c.status == "accepted"


def test_a_correction_by_another_user_goes_to_review(
    db: Database, settings: Settings, storage: Storage, world: World
) -> None:
    from loraloop.mlops import feedback
    from tests.mlops_world import add_traces

    user = quick_user(db)  # calls the public adapter from their own deployment
    by = {p.id: p for p in _reviewers(db, world, 3)}
    (trace,) = add_traces(
        db, user, count=1, version_id=world.version_id(1), texts=["How much is a Sakura Latte?"]
    )
    with db.session() as session:
        given = feedback.give(session, user, trace, correction="The Sakura Latte is 660 yen.")
        candidate_id = session.scalar(
            select(TrainingCandidate.id).where(TrainingCandidate.feedback_id == given.id)
        )
    with db.session() as session:
        row = session.scalar(select(Contribution).where(Contribution.candidate_id == candidate_id))
        assert row is not None
        assert row.kind == "correction"
        assert row.embedding is None
        done = loop.tick(session, settings, storage)  # the maintenance loop draws them
        assert done.community == {"placed": 1, "expired": 0, "drawn": 3}
        item = row.id
    _vote(db, settings, by, item, ["accept"] * 3)
    with db.session() as session:
        candidate = session.get(TrainingCandidate, candidate_id)
        assert candidate is not None
        assert candidate.status == "accepted"
        if candidate.role == "eval":
            assert session.scalar(select(EvalCase).where(EvalCase.candidate_id == candidate_id))
