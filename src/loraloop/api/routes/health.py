"""Liveness and readiness for load balancers and ``loraloop up``."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from loraloop import __version__
from loraloop.api.deps import DbSession

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(session: DbSession) -> dict[str, str]:
    """``ok`` when the server answers and the database does too."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__}
