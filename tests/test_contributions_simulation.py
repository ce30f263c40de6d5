"""The community under attack: honest contributors and reviewers, a random-label spammer, a
copier and a ring of three colluding accounts, run through the real services (SQLite and
PostgreSQL, MiniLM for duplicates). Issue 7's acceptance:

- accepted items are >= 95% correct against the ground truth;
- the spammer's and the ring's reputation and points end below every honest participant's;
- the copier gains nothing from copying (every copy refused, verdicts sealed before commit).
"""

from __future__ import annotations

import json
import os
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from loraloop.config import Settings
from loraloop.contributions import items, reputation, review
from loraloop.db.engine import Database
from loraloop.db.tables import Contribution, User
from loraloop.errors import Conflict, PermissionDenied
from loraloop.ml import embeddings
from loraloop.rewards import ledger
from loraloop.storage import Storage
from tests.mlops_world import make_world, quick_user

ROOT = Path(__file__).resolve().parents[1]
HONEST, HONEST_ITEMS, RING_ITEMS, SPAM_ITEMS, COPIES, GOLD = 12, 10, 8, 10, 10, 20
HONEST_ACCURACY, HONEST_ITEM_QUALITY = 0.95, 0.95


def _distinct_pairs(needed: int) -> list[tuple[str, str]]:
    """Questions of the example domain whose MiniLM vectors are pairwise below 0.9 cosine,
    each with its right answer."""
    rows = [
        json.loads(line)["messages"]
        for line in (ROOT / "examples/kumo_coffee/train.jsonl").read_text("utf-8").splitlines()
    ]
    pairs = [(m[0]["content"], m[1]["content"]) for m in rows]
    vectors = embeddings.load_minilm().embed([q for q, _ in pairs])
    kept: list[int] = []
    for i in range(len(pairs)):
        if all(float(vectors[i] @ vectors[j]) < 0.9 for j in kept):
            kept.append(i)
    assert len(kept) >= needed
    return [pairs[i] for i in kept[:needed]]


@dataclass
class Person:
    user: User
    role: str  # honest, spammer, copier, ring
    rng: random.Random
    salts: dict[int, tuple[str, str]] = field(default_factory=dict)
    copy_attempts: int = 0
    refusals: list[str | None] = field(default_factory=list)
    sealed_seen: int = 0


def _verdict(person: Person, truth: bool, author_role: str | None) -> str:
    if person.role == "spammer":
        return person.rng.choice(["accept", "reject"])
    if person.role == "copier":
        return "accept"  # nothing to copy: it sees no verdict before committing
    if person.role == "ring" and author_role == "ring":
        return "accept"
    right = person.rng.random() < HONEST_ACCURACY
    return "accept" if truth == right else "reject"


def test_consensus_holds_against_spam_copying_and_collusion(
    db: Database, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = int(os.environ.get("LORALOOP_SIM_SEED", "7"))
    rng = random.Random(seed)
    monkeypatch.setattr(review, "_system_rng", random.Random(seed + 1))  # reproducible draws
    world = make_world(db, tmp_path, versions=1, visibility="public")
    storage = Storage(settings.home / "artifacts")
    people = [
        Person(quick_user(db), "honest", random.Random(seed * 1000 + i)) for i in range(HONEST)
    ]
    people += [Person(quick_user(db), "spammer", random.Random(seed * 1000 + 100))]
    people += [Person(quick_user(db), "copier", random.Random(seed * 1000 + 101))]
    people += [
        Person(quick_user(db), "ring", random.Random(seed * 1000 + 102 + i)) for i in range(3)
    ]
    by_id = {p.user.id: p for p in people}
    with db.session() as session:
        for p in people:
            items.enrol(session, p.user, world.adapter_id, reviewer=True)

    needed = HONEST * HONEST_ITEMS + 3 * RING_ITEMS + SPAM_ITEMS + GOLD
    pairs = _distinct_pairs(needed)
    answers = [a for _, a in pairs]
    truth: dict[int, bool] = {}  # contribution id -> is the answer right
    author_role: dict[int, str] = {}

    def offer(person: Person, question: str, right: bool) -> int:
        answer = (
            pairs_by_q[question]
            if right
            else rng.choice([a for a in answers if a != pairs_by_q[question]])
        )
        with db.session() as session:
            row = items.submit(
                session,
                settings,
                storage,
                person.user,
                world.adapter_id,
                kind="example",
                item={
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                },
                source="simulation",
            )
            truth[row.id], author_role[row.id] = right, person.role
            return row.id

    pairs_by_q = dict(pairs)
    questions = [q for q, _ in pairs]
    gold_questions, questions = questions[:GOLD], questions[GOLD:]
    with db.session() as session:
        for n, question in enumerate(gold_questions):
            right = n % 2 == 0
            answer = (
                pairs_by_q[question]
                if right
                else answers[(answers.index(pairs_by_q[question]) + 7) % len(answers)]
            )
            items.add_gold(
                session,
                settings,
                world.owner,
                world.adapter_id,
                kind="example",
                item={
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": answer},
                    ]
                },
                verdict="accept" if right else "reject",
            )

    plan: list[tuple[Person, str, bool]] = []
    stream = iter(questions)
    for p in people:
        count = {"honest": HONEST_ITEMS, "ring": RING_ITEMS, "spammer": SPAM_ITEMS}.get(p.role, 0)
        for _ in range(count):
            quality = {"honest": HONEST_ITEM_QUALITY, "ring": 0.0, "spammer": 0.5}[p.role]
            plan.append((p, next(stream), p.rng.random() < quality))
    rng.shuffle(plan)
    copier = next(p for p in people if p.role == "copier")

    def review_round() -> int:
        """Every reviewer works their queue once: commit what is new, reveal what opened."""
        acted = 0
        for person in people:
            with db.session() as session:
                tasks = review.queue(session, person.user)
            for task in tasks:
                a, item = task.assignment, task.item
                with db.session() as session:
                    if a.state == "assigned":
                        if person.role == "copier":
                            try:
                                review.verdicts(session, person.user, item.id)
                            except PermissionDenied:
                                person.sealed_seen += 1
                        gold_truth = None if item.gold is None else item.gold == "accept"
                        is_right = truth.get(item.id, gold_truth)
                        assert is_right is not None
                        verdict = _verdict(person, is_right, author_role.get(item.id))
                        salt = secrets.token_hex(16)
                        person.salts[a.id] = (verdict, salt)
                        review.commit(
                            session,
                            settings,
                            person.user,
                            a.id,
                            review.commitment_of(a.id, verdict, salt),
                        )
                        acted += 1
                    elif item.reveal_opened_at is not None:
                        verdict, salt = person.salts[a.id]
                        review.reveal(
                            session, settings, person.user, a.id, verdict=verdict, salt=salt
                        )
                        acted += 1
        return acted

    for n, (person, question, right) in enumerate(plan):
        offer(person, question, right)
        if n % 10 == 9:  # the copier copies something recent, verbatim or reworded
            with db.session() as session:
                target = session.get(Contribution, max(truth))
                assert target is not None
                text = target.messages[0]["content"]
                asked = text if copier.copy_attempts % 2 == 0 else text.rstrip("?？。") + "?"
                copier.copy_attempts += 1
            try:
                with db.session() as session:
                    items.submit(
                        session,
                        settings,
                        storage,
                        copier.user,
                        world.adapter_id,
                        kind="example",
                        item={"messages": [{"role": "user", "content": asked}, target.messages[1]]},
                    )
            except Conflict as exc:
                copier.refusals.append(exc.code)
            review_round()
    for _ in range(40):
        with db.session() as session:
            review.maintain(session, settings, storage, rng=rng)
        if not review_round():
            break

    with db.session() as session:
        decided = {
            row.id: row for row in session.query(Contribution).filter(Contribution.gold.is_(None))
        }
        assert all(row.status != "pending" for row in decided.values()), "review stalled"
        accepted = [i for i, row in decided.items() if row.status == "accepted"]
        correct = sum(truth[i] for i in accepted)
        precision = correct / len(accepted)
        right_items = sum(truth.values())
        recall = correct / right_items
        standing = {p.user.id: reputation.standing(session, p.user.id) for p in people}
        points = {p.user.id: ledger.total(session, p.user.id) for p in people}
        copier_item_points = sum(
            e.millipoints for e in ledger.entries(session, copier.user) if e.kind == "contribution"
        )

    print(
        f"accepted {len(accepted)} of {len(decided)}: precision {precision:.3f}, "
        f"recall {recall:.3f}"
    )
    for p in people:
        s = standing[p.user.id]
        print(
            f"{p.role:8} rep {s.reputation:.3f} gold {s.gold_correct:.0f}/{s.gold_seen} "
            f"points {points[p.user.id] / 1000:.1f}"
        )
    assert precision >= 0.95
    assert recall >= 0.8  # the honest majority is not simply rejecting everything
    honest = [p.user.id for p in people if p.role == "honest"]
    bad = [p.user.id for p in people if p.role in ("spammer", "ring")]
    lowest_honest_rep = min(standing[u].reputation for u in honest)
    lowest_honest_points = min(points[u] for u in honest)
    for u in bad:
        assert standing[u].reputation < lowest_honest_rep, by_id[u].role
        assert points[u] < lowest_honest_points, by_id[u].role
    assert copier.copy_attempts >= COPIES
    assert len(copier.refusals) == copier.copy_attempts
    assert set(copier.refusals) == {"duplicate", "near_duplicate"}
    assert copier_item_points == 0
    assert copier.sealed_seen > 0  # it asked for verdicts before committing and got none
    assert float(np.mean([standing[u].gold_seen for u in honest])) > 0
