"""Admin-only routes (invisible to members: they get 404)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from loraloop.api.deps import AdminUser, DbSession
from loraloop.api.schemas import InviteCreate, InviteCreated
from loraloop.identity import accounts

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.post("/invites", status_code=201)
def create_invite(
    body: InviteCreate, request: Request, admin: AdminUser, session: DbSession
) -> InviteCreated:
    """A one-time sign-up code (shown once). Works in every registration mode."""
    issued = accounts.create_invite(session, created_by=admin.id, role=body.role, days=body.days)
    url = f"{request.base_url}signup?invite={issued.code}"
    return InviteCreated(
        code=issued.code, role=issued.role, expires_in_days=issued.expires_in_days, signup_url=url
    )
