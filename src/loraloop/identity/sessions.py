"""Server-side browser sessions. The cookie carries a random token; the table its hash."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from loraloop.db.engine import rowcount, utcnow
from loraloop.db.tables import User, WebSession
from loraloop.identity.tokens import digest, new_secret

__all__ = ["COOKIE", "IssuedSession", "end", "prune", "resolve", "start"]

COOKIE = "loraloop_session"


@dataclass(frozen=True)
class IssuedSession:
    token: str = field(repr=False)
    csrf_token: str = field(repr=False)
    max_age: int


def start(
    session: Session, user: User, *, days: int, replacing: str | None = None
) -> IssuedSession:
    """Begin a session for ``user``; the cookie's old session (if any) is ended (rotation)."""
    if replacing:
        end(session, replacing)
    prune(session)  # keeps the table small without a separate cleanup process
    token, csrf = new_secret(32), new_secret(32)
    session.add(
        WebSession(
            token_hash=digest(token),
            user_id=user.id,
            csrf_token=csrf,
            expires_at=utcnow() + timedelta(days=days),
        )
    )
    return IssuedSession(token=token, csrf_token=csrf, max_age=days * 86400)


def resolve(session: Session, token: str, *, days: int) -> tuple[User, WebSession] | None:
    """The active user and session for a cookie token, sliding the expiry; None if invalid."""
    row = session.get(WebSession, digest(token))
    now = utcnow()
    if row is None or row.expires_at <= now:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    if row.expires_at - now < timedelta(days=days) / 2:
        row.expires_at = now + timedelta(days=days)
    return user, row


def end(session: Session, token: str) -> None:
    session.execute(delete(WebSession).where(WebSession.token_hash == digest(token)))


def prune(session: Session) -> int:
    """Delete expired sessions; returns how many went."""
    return rowcount(session.execute(delete(WebSession).where(WebSession.expires_at <= utcnow())))
