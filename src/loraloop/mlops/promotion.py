"""Moving traffic between versions: promotion, canary trials, rollback.

Deployments on an adapter's ``champion`` alias resolve it per request, so each move here
takes effect on the next request. A canary keeps the champion and sends ``canary_share`` of
the requests of those deployments to the challenger until live feedback decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases
from loraloop.db.tables import (
    AdapterVersion,
    AliasChange,
    Deployment,
    Feedback,
    GateDecision,
    RetrainPolicy,
    RetrainRun,
    Trace,
    User,
)
from loraloop.errors import Conflict
from loraloop.mlops import events

__all__ = [
    "BAD",
    "LiveScore",
    "check_canary",
    "drop_challenger",
    "live_scores",
    "promote",
    "rollback",
    "start_canary",
]


def _set_canary(session: Session, adapter_id: int, share: float) -> None:
    session.execute(
        update(Deployment)
        .where(Deployment.adapter_id == adapter_id, Deployment.alias == "champion")
        .values(canary_share=share)
    )


def promote(
    session: Session,
    adapter_id: int,
    version_id: int,
    *,
    cause: str,
    decision: GateDecision | None = None,
    actor_id: int | None = None,
) -> None:
    """Make ``version_id`` the champion; the challenger alias and any canary end."""
    aliases.move(
        session,
        adapter_id,
        "champion",
        version_id,
        cause=cause,
        actor_id=actor_id,
        decision_id=decision.id if decision else None,
    )
    aliases.clear(session, adapter_id, "challenger", cause=cause, actor_id=actor_id)
    _set_canary(session, adapter_id, 0.0)
    events.publish(
        "promoted", session, adapter_id=adapter_id, version_id=version_id, decision=decision
    )


def drop_challenger(session: Session, adapter_id: int, version_id: int, *, cause: str) -> None:
    """A refused challenger serves nothing: clear the alias if it still names it."""
    current = aliases.current(session, adapter_id, "challenger")
    if current is not None and current.id == version_id:
        aliases.clear(session, adapter_id, "challenger", cause=cause)
        _set_canary(session, adapter_id, 0.0)


def start_canary(session: Session, adapter_id: int, version_id: int, share: float) -> None:
    aliases.move(session, adapter_id, "challenger", version_id, cause="canary")
    _set_canary(session, adapter_id, share)


def rollback(session: Session, user: User, adapter_id: int, to_version: int | None = None) -> int:
    """Put the champion back on ``to_version`` (default: the champion before this one).
    Returns the version number now serving."""
    adapters.get_own(session, user, adapter_id)
    if to_version is not None:
        target = adapters.get_version(session, user, adapter_id, to_version)
    else:
        previous = session.scalar(
            select(AliasChange.from_version_id)
            .where(
                AliasChange.adapter_id == adapter_id,
                AliasChange.alias == "champion",
                AliasChange.from_version_id.is_not(None),
            )
            .order_by(AliasChange.id.desc())
            .limit(1)
        )
        found = session.get(AdapterVersion, previous) if previous else None
        if found is None:
            raise Conflict(
                "this adapter has had only one champion; name a version to roll back to",
                code="nothing_to_roll_back",
            )
        target = found
    current = aliases.current(session, adapter_id, "champion")
    if current is not None and current.id == target.id:
        raise Conflict(f"version {target.version} is already the champion", code="already_champion")
    aliases.move(session, adapter_id, "champion", target.id, cause="rollback", actor_id=user.id)
    aliases.clear(session, adapter_id, "challenger", cause="rollback", actor_id=user.id)
    _set_canary(session, adapter_id, 0.0)
    return target.version


@dataclass(frozen=True)
class LiveScore:
    version_id: int
    rated: int
    """Answers of this version that got a rating or a correction."""
    bad: int
    """Of those, thumbs down, 1-2 stars, or corrected."""

    @property
    def bad_rate(self) -> float:
        return self.bad / self.rated if self.rated else 0.0


#: 1 for feedback that says the answer was bad: thumbs down, 1-2 stars, or a correction
BAD = case(
    (
        (Feedback.correction.is_not(None))
        | (Feedback.rating < 0)
        | ((Feedback.scale == "stars") & (Feedback.rating <= 2)),
        1,
    ),
    else_=0,
)


def live_scores(
    session: Session, adapter_id: int, since: datetime | None = None
) -> dict[int, LiveScore]:
    """Feedback per version of the adapter (one verdict per answer: its worst feedback)."""
    per_trace = (
        select(Trace.adapter_version_id.label("version_id"), func.max(BAD).label("bad"))
        .join(Feedback, Feedback.trace_id == Trace.id)
        .join(AdapterVersion, AdapterVersion.id == Trace.adapter_version_id)
        .where(AdapterVersion.adapter_id == adapter_id)
        .group_by(Trace.id, Trace.adapter_version_id)
    )
    if since is not None:
        per_trace = per_trace.where(Trace.created_at >= since)
    sub = per_trace.subquery()
    rows = session.execute(
        select(sub.c.version_id, func.count(), func.sum(sub.c.bad)).group_by(sub.c.version_id)
    )
    return {v: LiveScore(v, int(n), int(bad or 0)) for v, n, bad in rows}


def check_canary(session: Session, run: RetrainRun) -> str | None:
    """Promote or roll back a canary once both versions have enough rated answers.
    Returns ``promoted``, ``rolled_back`` or None (keep waiting, or the trial was ended by
    hand: an override or a rollback cleared the challenger, and the run is closed as it stands).
    """
    decision = session.get(GateDecision, run.decision_id) if run.decision_id else None
    if decision is None or decision.challenger_version_id is None:
        return None
    on_trial = aliases.current(session, run.adapter_id, "challenger")
    if on_trial is None or on_trial.id != decision.challenger_version_id:
        champion = aliases.current(session, run.adapter_id, "champion")
        won = champion is not None and champion.id == decision.challenger_version_id
        run.status = "promoted" if won else "refused"
        return None
    policy = session.get(RetrainPolicy, run.adapter_id)
    need = policy.canary_min_feedback if policy else 20
    tolerance = policy.tolerance if policy else 0.02
    scores = live_scores(session, run.adapter_id, since=decision.created_at)
    old = scores.get(decision.champion_version_id or -1)
    new = scores.get(decision.challenger_version_id)
    if old is None or new is None or old.rated < need or new.rated < need:
        return None
    numbers = {
        "champion": {"rated": old.rated, "bad": old.bad, "bad_rate": old.bad_rate},
        "challenger": {"rated": new.rated, "bad": new.bad, "bad_rate": new.bad_rate},
        "tolerance": tolerance,
    }
    better = new.bad_rate <= old.bad_rate + tolerance
    verdict = GateDecision(
        adapter_id=run.adapter_id,
        champion_version_id=decision.champion_version_id,
        challenger_version_id=decision.challenger_version_id,
        outcome="promote" if better else "refuse",
        reason=(
            f"live: challenger {new.bad_rate:.1%} bad of {new.rated} rated answers, champion "
            f"{old.bad_rate:.1%} of {old.rated}"
        ),
        numbers={"live": numbers},
        override_of=decision.id,
    )
    session.add(verdict)
    session.flush()
    if better:
        promote(
            session,
            run.adapter_id,
            decision.challenger_version_id,
            cause="canary",
            decision=verdict,
        )
        run.status = "promoted"
    else:
        drop_challenger(session, run.adapter_id, decision.challenger_version_id, cause="canary")
        run.status = "refused"
    run.decision_id = verdict.id
    return "promoted" if better else "rolled_back"
