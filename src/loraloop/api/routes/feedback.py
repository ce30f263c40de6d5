"""Feedback on answers: from the playground (session) and from programs (``/v1/feedback``)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from loraloop.api.deps import CurrentUser, DbSession
from loraloop.api.feedback_schemas import FeedbackCreate, FeedbackPublic
from loraloop.api.routes.openai import ApiCaller, AppGateway
from loraloop.mlops import feedback

router = APIRouter(tags=["feedback"])


@router.post("/api/feedback", status_code=201)
def give_feedback(body: FeedbackCreate, user: CurrentUser, session: DbSession) -> FeedbackPublic:
    """Rate or correct one of your answers (playground or API)."""
    row = feedback.give(session, user, **body.model_dump())
    return FeedbackPublic.model_validate(row)


@router.get("/api/feedback")
def recent_feedback(
    user: CurrentUser, session: DbSession, limit: int = Query(20, ge=1, le=200)
) -> list[FeedbackPublic]:
    """The newest feedback on your answers."""
    return [FeedbackPublic.model_validate(f) for f, _ in feedback.recent(session, user, limit)]


@router.post("/v1/feedback", status_code=201)
def api_feedback(body: FeedbackCreate, caller: ApiCaller, gateway: AppGateway) -> FeedbackPublic:
    """Rate or correct an answer by its completion id, with the key of the answer's owner."""
    with gateway.db.session() as session:
        row = feedback.give(session, caller.user, key=caller.key, **body.model_dump())
        return FeedbackPublic.model_validate(row)
