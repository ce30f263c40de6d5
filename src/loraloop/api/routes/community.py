"""Community work on adapters: contribute, review (commit, then reveal), see your reputation
and points, and an adapter's leaderboard. Private adapters answer 404 to anyone their owner
did not invite; a review, a contribution or a ledger entry is seen only by whom it concerns."""

from __future__ import annotations

from fastapi import APIRouter, Query

from loraloop.api.community_schemas import (
    CommitBody,
    ContributionCreate,
    ContributionDecision,
    ContributionPublic,
    GoldCreate,
    InviteBody,
    LeaderboardRow,
    MemberPublic,
    PointsLine,
    PointsPublic,
    RevealBody,
    ReviewerBody,
    ReviewItem,
    ReviewTask,
    StandingPublic,
    VerdictPublic,
)
from loraloop.api.deps import AppSettings, AppStorage, CurrentUser, DbSession
from loraloop.contributions import items, reputation, review, standings

router = APIRouter(prefix="/api", tags=["community"])


@router.post("/adapters/{adapter_id}/contributions", status_code=201)
def contribute(
    adapter_id: int,
    body: ContributionCreate,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
    storage: AppStorage,
) -> ContributionPublic:
    """Offer a training example or an eval case. Duplicates (exact, or MiniLM cosine at or
    above ``near_duplicate_cosine``) are refused with 409 naming the existing item."""
    row = items.submit(
        session,
        settings,
        storage,
        user,
        adapter_id,
        kind=body.kind,
        item=body.item,
        source=body.source,
    )
    return ContributionPublic.model_validate(row)


@router.get("/adapters/{adapter_id}/contributions")
def adapter_contributions(
    adapter_id: int,
    user: CurrentUser,
    session: DbSession,
    status: str | None = Query(None, pattern="^(pending|accepted|rejected|gold)$"),
) -> list[ContributionPublic]:
    """Everything offered to your adapter (owner only)."""
    rows = items.list_for_adapter(session, user, adapter_id, status)
    return [ContributionPublic.model_validate(r) for r in rows]


@router.post("/adapters/{adapter_id}/gold", status_code=201)
def add_gold(
    adapter_id: int,
    body: GoldCreate,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> ContributionPublic:
    """Add an item with a known verdict to measure reviewers (owner only)."""
    row = items.add_gold(
        session, settings, user, adapter_id, kind=body.kind, item=body.item, verdict=body.verdict
    )
    return ContributionPublic.model_validate(row)


@router.post("/adapters/{adapter_id}/invites", status_code=201)
def invite(
    adapter_id: int, body: InviteBody, user: CurrentUser, session: DbSession
) -> MemberPublic:
    """Let someone contribute to and review for your private adapter."""
    return MemberPublic.model_validate(items.invite(session, user, adapter_id, body.email))


@router.put("/adapters/{adapter_id}/reviewer")
def set_reviewer(
    adapter_id: int, body: ReviewerBody, user: CurrentUser, session: DbSession
) -> MemberPublic:
    """Join (``reviewer: true``) or leave the adapter's reviewer pool."""
    row = items.enrol(session, user, adapter_id, reviewer=body.reviewer)
    return MemberPublic.model_validate(row)


@router.get("/adapters/{adapter_id}/leaderboard")
def leaderboard(
    adapter_id: int,
    user: CurrentUser,
    session: DbSession,
    limit: int = Query(50, ge=1, le=500),
) -> list[LeaderboardRow]:
    """Contributors of the adapter by points earned on it."""
    return [
        LeaderboardRow(
            rank=p.rank,
            display_name=p.display_name,
            points=p.millipoints / 1000,
            reputation=round(p.reputation, 4),
            accepted=p.accepted,
        )
        for p in standings.leaderboard(session, user, adapter_id, limit)
    ]


@router.get("/contributions")
def my_contributions(user: CurrentUser, session: DbSession) -> list[ContributionPublic]:
    """What you offered, newest first, with each one's status and reason."""
    return [ContributionPublic.model_validate(r) for r in items.list_mine(session, user)]


@router.get("/contributions/{contribution_id}")
def get_contribution(
    contribution_id: int, user: CurrentUser, session: DbSession
) -> ContributionPublic:
    """One item, to its author or the adapter's owner: status, reason, tally, provenance."""
    return ContributionPublic.model_validate(items.get(session, user, contribution_id))


@router.post("/contributions/{contribution_id}/decision")
def decide(
    contribution_id: int, body: ContributionDecision, user: CurrentUser, session: DbSession
) -> ContributionPublic:
    """Accept or reject an item on your own adapter directly."""
    row = items.decide(session, user, contribution_id, accept=body.accept, reason=body.reason)
    return ContributionPublic.model_validate(row)


@router.get("/contributions/{contribution_id}/verdicts")
def verdicts(contribution_id: int, user: CurrentUser, session: DbSession) -> list[VerdictPublic]:
    """The revealed verdicts; sealed (403) until the item is decided."""
    return [
        VerdictPublic.model_validate(a) for a in review.verdicts(session, user, contribution_id)
    ]


@router.get("/reviews")
def review_queue(user: CurrentUser, session: DbSession) -> list[ReviewTask]:
    """The reviews you were drawn for that still need your commitment or your reveal."""
    return [
        ReviewTask(
            assignment_id=t.assignment.id,
            adapter_id=t.item.adapter_id,
            state=t.assignment.state,
            due_at=t.assignment.due_at,
            reveal_open=t.item.reveal_opened_at is not None,
            item=ReviewItem(
                kind=t.item.kind,
                messages=t.item.messages,
                expected=t.item.expected,
                metric=t.item.metric,
                source=(t.item.provenance or {}).get("source"),
            ),
        )
        for t in review.queue(session, user)
    ]


@router.post("/reviews/{assignment_id}/commit")
def commit(
    assignment_id: int,
    body: CommitBody,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, str]:
    """Commit to a verdict without showing it: send only its hash."""
    row = review.commit(session, settings, user, assignment_id, body.commitment)
    return {"state": row.state}


@router.post("/reviews/{assignment_id}/reveal")
def reveal(
    assignment_id: int,
    body: RevealBody,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> dict[str, str]:
    """Reveal the verdict, salt and edit you committed to (409 until every reviewer has
    committed; 400 if they do not hash to your commitment)."""
    row = review.reveal(
        session,
        settings,
        user,
        assignment_id,
        verdict=body.verdict,
        salt=body.salt,
        edited=body.edited,
        comment=body.comment,
    )
    return {"state": row.state}


@router.get("/me/reputation")
def my_reputation(user: CurrentUser, session: DbSession) -> StandingPublic:
    """Your reputation, vote weight, probation and accuracy on gold items."""
    return StandingPublic.model_validate(reputation.standing(session, user.id).as_dict())


@router.get("/me/points")
def my_points(
    user: CurrentUser, session: DbSession, adapter_id: int | None = Query(None, ge=1)
) -> PointsPublic:
    """Your points and every entry with its formula and the event that earned it."""
    total, lines = standings.my_points(session, user, adapter_id=adapter_id)
    return PointsPublic(
        points=total / 1000,
        entries=[
            PointsLine(
                id=line.entry.id,
                adapter_id=line.entry.adapter_id,
                points=line.entry.millipoints / 1000,
                kind=line.entry.kind,
                breakdown=line.entry.breakdown,
                source=line.source,
                created_at=line.entry.created_at,
            )
            for line in lines
        ],
    )
