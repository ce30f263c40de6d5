"""Corrections become candidate training examples for the adapter that gave the answer.

A correction on a trace served by an adapter version turns into a candidate: the
conversation that was asked plus the corrected answer. One in four (by id, so the split is
stable) is held out as an evaluation case of the adapter's ``corrections`` suite, so the gate
measures a challenger on what users corrected without having trained on those very cases.

Candidates wait for a decision, except the owner's own corrections when the retraining
policy trusts them (the default). Others' corrections are announced (``candidate_pending``)
so community review (:mod:`loraloop.contributions`) can decide them; the owner may still
decide any candidate directly (announced as ``candidate_decided``).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.db.engine import utcnow
from loraloop.db.tables import (
    AdapterVersion,
    Feedback,
    RetrainPolicy,
    Trace,
    TrainingCandidate,
    User,
)
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.mlops import events, suites

__all__ = [
    "EVAL_EVERY",
    "accepted_examples",
    "close",
    "count_since",
    "decide",
    "from_feedback",
    "list_for",
]

EVAL_EVERY = 4
"""Every fourth candidate (by id) is held out for evaluation instead of training."""


def from_feedback(session: Session, feedback: Feedback) -> TrainingCandidate | None:
    """The candidate a correction makes (None without a correction or an adapter behind it)."""
    if not feedback.correction:
        return None
    trace = session.get(Trace, feedback.trace_id)
    if trace is None or trace.adapter_version_id is None:
        return None
    version = session.get(AdapterVersion, trace.adapter_version_id)
    if version is None:
        return None
    asked = trace.request.get("messages") or [
        {"role": "user", "content": trace.request.get("prompt", "")}
    ]
    row = TrainingCandidate(
        adapter_id=version.adapter_id,
        feedback_id=feedback.id,
        author_id=feedback.author_id,
        messages=[*asked, {"role": "assistant", "content": feedback.correction}],
        status="pending",
    )
    session.add(row)
    session.flush()
    row.role = "eval" if row.id % EVAL_EVERY == 0 else "train"
    adapter = adapters.get_any(session, version.adapter_id)
    policy = session.get(RetrainPolicy, adapter.id)
    trusted = policy.trust_owner_corrections if policy else True
    if trusted and feedback.author_id == adapter.owner_id:
        close(session, row, accept=True, by=feedback.author_id, reason="the owner's own correction")
    elif feedback.author_id != adapter.owner_id:
        events.publish("candidate_pending", session, candidate=row)
    return row


def decide(
    session: Session, user: User, candidate_id: int, *, accept: bool, reason: str | None = None
) -> TrainingCandidate:
    """The adapter owner accepts or rejects a pending candidate."""
    row = session.get(TrainingCandidate, candidate_id)
    if row is None:
        raise NotFound(f"candidate {candidate_id} not found", param="candidate_id")
    adapters.get_own(session, user, row.adapter_id)  # others see "not found"
    if row.status != "pending":
        raise Conflict(
            f"candidate {candidate_id} was already {row.status}", code="candidate_decided"
        )
    if not accept and (not reason or not reason.strip()):
        raise InvalidRequest("say why the candidate is rejected", param="reason")
    close(session, row, accept=accept, by=user.id, reason=reason)
    events.publish("candidate_decided", session, candidate=row)
    return row


def close(
    session: Session,
    row: TrainingCandidate,
    *,
    accept: bool,
    by: int | None,
    reason: str | None,
    messages: list[dict[str, str]] | None = None,
) -> None:
    """Record the decision; an accepted held-out one joins the corrections suite.
    ``messages`` replaces the conversation (a reviewer's fix)."""
    if messages is not None:
        row.messages = messages
    row.status = "accepted" if accept else "rejected"
    row.decided_by, row.reason, row.decided_at = by, reason, utcnow()
    if accept and row.role == "eval":
        suites.add_correction_case(session, row)
    session.flush()


def list_for(
    session: Session, user: User, adapter_id: int, status: str | None = None
) -> list[TrainingCandidate]:
    adapters.get_own(session, user, adapter_id)
    query = select(TrainingCandidate).where(TrainingCandidate.adapter_id == adapter_id)
    if status is not None:
        query = query.where(TrainingCandidate.status == status)
    return list(session.scalars(query.order_by(TrainingCandidate.id.desc())))


def accepted_examples(session: Session, adapter_id: int) -> list[list[dict[str, str]]]:
    """The accepted training-role conversations, oldest first (what a retrain adds)."""
    rows = session.scalars(
        select(TrainingCandidate.messages)
        .where(
            TrainingCandidate.adapter_id == adapter_id,
            TrainingCandidate.status == "accepted",
            TrainingCandidate.role == "train",
        )
        .order_by(TrainingCandidate.id)
    )
    return [list(m) for m in rows]


def count_since(session: Session, adapter_id: int, since_id: int) -> int:
    """Accepted training candidates with an id above ``since_id``."""
    return int(
        session.scalar(
            select(func.count()).where(
                TrainingCandidate.adapter_id == adapter_id,
                TrainingCandidate.status == "accepted",
                TrainingCandidate.role == "train",
                TrainingCandidate.id > since_id,
            )
        )
        or 0
    )
