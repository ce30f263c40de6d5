"""Feedback on a served answer (a trace): a thumbs or 1–5 rating, a better answer, tags, a
comment. Only the trace's owner gives it: in the playground, or from their program with any
of their keys, citing the completion id ``/v1`` returned. A correction of an adapter's answer
also becomes a training candidate for that adapter (:mod:`loraloop.mlops.candidates`)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.db.tables import ApiKey, Feedback, Trace, User
from loraloop.errors import InvalidRequest, NotFound
from loraloop.mlops import candidates

__all__ = ["SCALES", "give", "recent"]

#: scale -> allowed ratings
SCALES: dict[str, range] = {"thumbs": range(-1, 2, 2), "stars": range(1, 6)}
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def _validate(
    rating: int | None, scale: str, correction: str | None, tags: list[str], comment: str | None
) -> None:
    problems = []
    if scale not in SCALES:
        problems.append(f"scale {scale!r} must be one of {', '.join(SCALES)}")
    elif rating is not None and rating not in SCALES[scale]:
        allowed = "-1 or 1" if scale == "thumbs" else "1 to 5"
        problems.append(f"rating {rating} on the {scale} scale must be {allowed}")
    if correction is not None and not correction.strip():
        problems.append("correction is empty; write the better answer or leave it out")
    bad = [t for t in tags if not _TAG.match(t)]
    if bad or len(tags) > 10:
        problems.append(f"tags {bad or tags} must be at most 10 of 1-32 lowercase letters, digits")
    if rating is None and not correction and not comment and not tags:
        problems.append("give a rating, a correction, tags or a comment")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_feedback")


def give(
    session: Session,
    user: User,
    trace_id: str,
    *,
    key: ApiKey | None = None,
    rating: int | None = None,
    scale: str = "thumbs",
    correction: str | None = None,
    tags: list[str] | None = None,
    comment: str | None = None,
) -> Feedback:
    trace = session.get(Trace, trace_id)
    if trace is None or trace.owner_id != user.id:
        raise NotFound(f"no answer with id {trace_id} of yours", param="trace_id")
    tags = sorted(set(tags or []))
    _validate(rating, scale, correction, tags, comment)
    row = Feedback(
        trace_id=trace.id,
        owner_id=trace.owner_id,
        author_id=user.id,
        key_id=key.id if key else None,
        rating=rating,
        scale=scale,
        correction=correction,
        tags=tags,
        comment=comment,
    )
    session.add(row)
    session.flush()
    candidates.from_feedback(session, row)
    return row


def recent(session: Session, user: User, limit: int = 10) -> list[tuple[Feedback, Trace]]:
    """The newest feedback on the user's answers, with the answer it is about."""
    rows = session.execute(
        select(Feedback, Trace)
        .join(Trace, Trace.id == Feedback.trace_id)
        .where(Feedback.owner_id == user.id)
        .order_by(Feedback.id.desc())
        .limit(limit)
    )
    return [(f, t) for f, t in rows]
