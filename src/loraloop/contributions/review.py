"""Review by the community: k reviewers drawn at random, commit-reveal verdicts, a
reputation-weighted quorum.

1. **Draw.** Each pending item gets ``review_k`` reviewers at random from the adapter's
   reviewer pool, never its author or the owner, never two accounts that share a wallet
   address (ever linked) with the author or with each other.
2. **Commit.** A reviewer sees the item, never another verdict, and sends
   ``sha256("loraloop-review:{assignment}:{verdict}:{salt}:{sha256(edit)}")``.
3. **Reveal.** Once every drawn reviewer has committed, each reveals verdict, salt and edit;
   a reveal that does not hash to its commitment is refused. Nobody could copy a verdict:
   there was none to see before committing, and a commitment cannot change afterwards.
4. **Decide.** With every commitment revealed, the item is decided when one side (accept
   and fix against reject) holds ``review_quorum`` of the revealed vote weight; otherwise two
   more reviewers are drawn, up to ``review_max``, after which it is rejected for want of
   consensus. Verdicts become visible after the decision.

Gold items run the same way, round after round with fresh reviewers; each round is scored
against the known verdict instead of being decided. Reviewers who miss the commit deadline
are replaced; a commitment never revealed counts against the reviewer.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.config import Settings
from loraloop.contributions import content, reputation, rules, settle
from loraloop.db.engine import utcnow
from loraloop.db.tables import (
    CommunityMember,
    Contribution,
    ReviewAssignment,
    User,
    WalletLink,
)
from loraloop.errors import Conflict, InvalidRequest, NotFound, PermissionDenied
from loraloop.storage import Storage

__all__ = [
    "VERDICTS",
    "Maintained",
    "commit",
    "commitment_of",
    "maintain",
    "queue",
    "reveal",
    "staff",
    "verdicts",
    "verdicts_for",
]

VERDICTS = ("accept", "reject", "fix")


def verdicts_for(kind: str) -> tuple[str, ...]:
    """The verdicts an item of ``kind`` takes: an eval case is accepted or rejected, not fixed
    (offer only these before committing: a sealed vote cannot be changed)."""
    return ("accept", "reject") if kind == "eval_case" else VERDICTS


_OPEN = ("assigned", "committed", "revealed")
_system_rng = random.SystemRandom()


def commitment_of(
    assignment_id: int, verdict: str, salt: str, edited: list[dict[str, str]] | None = None
) -> str:
    """The hash a reviewer commits to (the browser and the CLI compute the same)."""
    edit = (
        ""
        if edited is None
        else _sha(json.dumps(edited, ensure_ascii=False, sort_keys=True, separators=(",", ":")))
    )
    return _sha(f"loraloop-review:{assignment_id}:{verdict}:{salt}:{edit}")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# drawing -----------------------------------------------------------------------------------


def _round(session: Session, row: Contribution) -> list[ReviewAssignment]:
    """The item's current round: drawn, not yet scored, not expired or cancelled."""
    return list(
        session.scalars(
            select(ReviewAssignment).where(
                ReviewAssignment.contribution_id == row.id,
                ReviewAssignment.state.in_(_OPEN),
                ReviewAssignment.matched.is_(None),
            )
        )
    )


def _target(settings: Settings, row: Contribution) -> int:
    return int((row.decision or {}).get("target", settings.review_k))


def _addresses(session: Session, user_ids: set[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {u: set() for u in user_ids}
    if user_ids:
        for user_id, address in session.execute(
            select(WalletLink.user_id, WalletLink.address).where(WalletLink.user_id.in_(user_ids))
        ):
            out[user_id].add(address.lower())
    return out


def staff(
    session: Session,
    settings: Settings,
    row: Contribution,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> list[ReviewAssignment]:
    """Draw reviewers until the round has its target (as many as are eligible)."""
    if row.status not in ("pending", "gold"):
        return []
    now = now or utcnow()
    current = _round(session, row)
    missing = _target(settings, row) - len(current)
    if missing <= 0:
        return []
    owner_id = adapters.get_any(session, row.adapter_id).owner_id
    seen = set(
        session.scalars(
            select(ReviewAssignment.reviewer_id).where(ReviewAssignment.contribution_id == row.id)
        )
    )
    pool = (
        set(
            session.scalars(
                select(CommunityMember.user_id)
                .join(User, User.id == CommunityMember.user_id)
                .where(
                    CommunityMember.adapter_id == row.adapter_id,
                    CommunityMember.reviewer.is_(True),
                    User.is_active.is_(True),
                )
            )
        )
        - seen
        - {owner_id, row.author_id}
    )
    people = {u for u in {row.author_id, *(a.reviewer_id for a in current)} if u is not None}
    addresses = _addresses(session, pool | people)
    blocked = set().union(*(addresses[u] for u in people)) if people else set()
    candidates = sorted(u for u in pool if not addresses[u] & blocked)
    (rng or _system_rng).shuffle(candidates)
    drawn: list[ReviewAssignment] = []
    for user_id in candidates:
        if len(drawn) == missing:
            break
        if addresses[user_id] & blocked:
            continue
        blocked |= addresses[user_id]
        drawn.append(
            ReviewAssignment(
                contribution_id=row.id,
                reviewer_id=user_id,
                assigned_at=now,
                due_at=now + timedelta(hours=settings.review_commit_hours),
            )
        )
    if drawn:
        row.reveal_opened_at = None  # the newcomers must commit first
        session.add_all(drawn)
        session.flush()
    return drawn


# committing and revealing ------------------------------------------------------------------


def _own(session: Session, user: User, assignment_id: int) -> tuple[ReviewAssignment, Contribution]:
    assignment = session.get(ReviewAssignment, assignment_id)
    if assignment is None or assignment.reviewer_id != user.id:
        raise NotFound(f"review {assignment_id} not found", param="assignment_id")
    # one reveal at a time per item: two concurrent last reveals must not both decide it
    row = session.get(Contribution, assignment.contribution_id, with_for_update=True)
    assert row is not None
    session.refresh(assignment)
    return assignment, row


@dataclass(frozen=True)
class Task:
    """What a reviewer sees: the item, never its author or anyone's verdict."""

    assignment: ReviewAssignment
    item: Contribution


def queue(session: Session, user: User) -> list[Task]:
    rows = session.execute(
        select(ReviewAssignment, Contribution)
        .join(Contribution, Contribution.id == ReviewAssignment.contribution_id)
        .where(
            ReviewAssignment.reviewer_id == user.id,
            ReviewAssignment.state.in_(("assigned", "committed")),
        )
        .order_by(ReviewAssignment.id)
    )
    return [Task(a, c) for a, c in rows]


def commit(
    session: Session,
    settings: Settings,
    user: User,
    assignment_id: int,
    commitment: str,
    *,
    now: datetime | None = None,
) -> ReviewAssignment:
    assignment, row = _own(session, user, assignment_id)
    if assignment.state != "assigned":
        raise Conflict(
            f"review {assignment_id} is {assignment.state}; a commitment cannot change",
            code="review_committed",
        )
    commitment = commitment.strip().lower()
    if len(commitment) != 64 or any(c not in "0123456789abcdef" for c in commitment):
        raise InvalidRequest(
            "a commitment is the 64-character hex sha256 of "
            "'loraloop-review:{assignment}:{verdict}:{salt}:{sha256 of the edit or empty}'",
            param="commitment",
        )
    now = now or utcnow()
    assignment.commitment, assignment.state, assignment.committed_at = commitment, "committed", now
    session.flush()
    _progress(session, settings, row, now)
    return assignment


def reveal(
    session: Session,
    settings: Settings,
    user: User,
    assignment_id: int,
    *,
    verdict: str,
    salt: str,
    edited: list[dict[str, str]] | None = None,
    comment: str | None = None,
    now: datetime | None = None,
) -> ReviewAssignment:
    assignment, row = _own(session, user, assignment_id)
    if assignment.state != "committed":
        raise Conflict(
            f"review {assignment_id} is {assignment.state}; reveal follows a commitment",
            code="review_not_committed",
        )
    if row.reveal_opened_at is None:
        waiting = sum(1 for a in _round(session, row) if a.state == "assigned")
        raise Conflict(
            f"reveal opens when every reviewer has committed ({waiting} still to commit)",
            code="reveal_not_open",
        )
    if verdict not in VERDICTS:
        raise InvalidRequest(f"verdict must be one of {', '.join(VERDICTS)}", param="verdict")
    if (verdict == "fix") != (edited is not None):
        raise InvalidRequest(
            "a fix comes with the edited messages, and only a fix does", param="edited"
        )
    if edited is not None:
        edited = _check_edit(row, edited)
    if commitment_of(assignment.id, verdict, salt, edited) != assignment.commitment:
        raise InvalidRequest(
            "this verdict, salt and edit do not hash to your commitment", code="reveal_mismatch"
        )
    now = now or utcnow()
    assignment.verdict, assignment.edited, assignment.comment = verdict, edited, comment
    assignment.state, assignment.revealed_at = "revealed", now
    assignment.weight = reputation.standing(session, user.id, now).weight
    session.flush()
    _progress(session, settings, row, now)
    return assignment


def _check_edit(row: Contribution, edited: list[dict[str, str]]) -> list[dict[str, str]]:
    if "fix" not in verdicts_for(row.kind):
        raise InvalidRequest("an eval case is accepted or rejected, not fixed", param="verdict")
    messages, _, _ = content.parse("example", {"messages": edited})
    return messages


def _progress(session: Session, settings: Settings, row: Contribution, now: datetime) -> None:
    """Open the reveal when everyone committed; decide (or score gold) when all revealed."""
    current = _round(session, row)
    if not current or any(a.state == "assigned" for a in current):
        return
    if len(current) < _target(settings, row):
        return
    if row.reveal_opened_at is None:
        row.reveal_opened_at = now
    if any(a.state == "committed" for a in current):
        return
    if row.gold is not None:
        settle.score_reviews(session, row, row.gold)
        row.reveal_opened_at = None
        staff(session, settings, row, now=now)
        return
    _decide(session, settings, row, now)


def _decide(session: Session, settings: Settings, row: Contribution, now: datetime) -> None:
    revealed = list(
        session.scalars(
            select(ReviewAssignment).where(
                ReviewAssignment.contribution_id == row.id, ReviewAssignment.state == "revealed"
            )
        )
    )
    weights = {v: 0.0 for v in VERDICTS}
    for a in revealed:
        weights[a.verdict or "reject"] += a.weight or 0.0
    total = sum(weights.values())
    accept_side = weights["accept"] + weights["fix"]
    share = max(accept_side, weights["reject"]) / total if total else 0.0
    tally = {
        "weights": {k: round(v, 4) for k, v in weights.items()},
        "share": round(share, 4),
        "quorum": settings.review_quorum,
        "reviewers": len(revealed),
    }
    if share >= settings.review_quorum:
        accepted = accept_side > weights["reject"]
        final = None
        if accepted and weights["fix"] > weights["accept"]:
            fixer = max((a for a in revealed if a.verdict == "fix"), key=lambda a: a.weight or 0)
            final = fixer.edited
        settle.finalize(
            session,
            row,
            accepted=accepted,
            via="consensus",
            reason=f"{share:.0%} of the vote weight {'accepts' if accepted else 'rejects'}",
            quality=rules.quality(weights["accept"], weights["fix"], weights["reject"]),
            final=final,
            tally=tally,
        )
        return
    if len(revealed) + 2 <= settings.review_max:
        row.decision = {**tally, "target": _target(settings, row) + 2}
        if staff(session, settings, row, now=now):
            return
    settle.finalize(
        session,
        row,
        accepted=False,
        via="consensus",
        reason=f"no consensus: the larger side holds {share:.0%} of the vote weight, "
        f"{settings.review_quorum:.0%} was needed",
        quality=0.0,
        tally=tally,
    )


def verdicts(session: Session, user: User, contribution_id: int) -> list[ReviewAssignment]:
    """The revealed verdicts, once the item is decided, to its owner, author and reviewers."""
    row = session.get(Contribution, contribution_id)
    if row is None:
        raise NotFound(f"contribution {contribution_id} not found", param="contribution_id")
    owner_id = adapters.get_any(session, row.adapter_id).owner_id
    reviewers = set(
        session.scalars(
            select(ReviewAssignment.reviewer_id).where(ReviewAssignment.contribution_id == row.id)
        )
    )
    if user.id not in {owner_id, row.author_id, *reviewers}:
        raise NotFound(f"contribution {contribution_id} not found", param="contribution_id")
    if user.id != owner_id and (row.gold is not None or row.status == "pending"):
        raise PermissionDenied(
            "verdicts stay sealed until the item is decided", code="verdicts_sealed"
        )
    return list(
        session.scalars(
            select(ReviewAssignment)
            .where(ReviewAssignment.contribution_id == row.id, ReviewAssignment.state == "revealed")
            .order_by(ReviewAssignment.id)
        )
    )


# the maintenance tick ----------------------------------------------------------------------


@dataclass
class Maintained:
    placed: int = 0
    expired: int = 0
    drawn: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"placed": self.placed, "expired": self.expired, "drawn": self.drawn}


def maintain(
    session: Session,
    settings: Settings,
    storage: Storage,
    *,
    now: datetime | None = None,
    rng: random.Random | None = None,
) -> Maintained:
    """Embed new corrections, replace late reviewers, and staff items short of reviewers."""
    from loraloop.contributions import items

    now = now or utcnow()
    done = Maintained()
    for row in session.scalars(
        select(Contribution).where(
            Contribution.status == "pending", Contribution.embedding.is_(None)
        )
    ):
        items.place(session, settings, storage, row)
        done.placed += 1
    touched: set[int] = set()
    late = session.scalars(
        select(ReviewAssignment).where(
            ReviewAssignment.state == "assigned", ReviewAssignment.due_at < now
        )
    )
    for assignment in late:
        assignment.state = "expired"
        touched.add(assignment.contribution_id)
        done.expired += 1
    reveal_by = now - timedelta(hours=settings.review_reveal_hours)
    silent = session.execute(
        select(ReviewAssignment)
        .join(Contribution, Contribution.id == ReviewAssignment.contribution_id)
        .where(ReviewAssignment.state == "committed", Contribution.reveal_opened_at < reveal_by)
    ).scalars()
    for assignment in silent:
        assignment.state = "expired"
        reputation.record(
            session, assignment.reviewer_id, "silent", False, f"silent:{assignment.id}"
        )
        touched.add(assignment.contribution_id)
        done.expired += 1
    session.flush()
    for row in session.scalars(
        select(Contribution).where(Contribution.status.in_(("pending", "gold")))
    ):
        done.drawn += len(staff(session, settings, row, now=now, rng=rng))
        if row.id in touched:
            _progress(session, settings, row, now)
    session.flush()
    return done
