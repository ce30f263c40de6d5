"""Sign-in throttling: failures are counted per email and per client address in the database,
so every replica sees the same counts. Unknown emails are counted exactly like known ones."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from loraloop.db.engine import rowcount, utcnow
from loraloop.db.tables import LoginFailure
from loraloop.errors import RateLimited
from loraloop.identity.tokens import digest

__all__ = ["check", "clear", "prune", "record_failure", "throttle_keys"]

IP_FACTOR = 4  # a shared address (an office NAT) gets more room than one email


def throttle_keys(email: str, client: str) -> tuple[str, str]:
    return digest("email:" + email), digest("ip:" + client)


def check(session: Session, email: str, client: str, *, limit: int, window_minutes: int) -> None:
    """Raise RateLimited when this email or this address failed too often recently."""
    since = utcnow() - timedelta(minutes=window_minutes)
    email_key, ip_key = throttle_keys(email, client)
    for key, allowed in ((email_key, limit), (ip_key, limit * IP_FACTOR)):
        count = session.scalar(
            select(func.count()).where(LoginFailure.key == key, LoginFailure.at >= since)
        )
        if (count or 0) >= allowed:
            raise RateLimited(
                f"Too many failed sign-in attempts. Wait {window_minutes} minutes and try again.",
                retry_after=window_minutes * 60,
                code="too_many_sign_in_attempts",
            )


def record_failure(session: Session, email: str, client: str) -> None:
    email_key, ip_key = throttle_keys(email, client)
    session.add_all([LoginFailure(key=email_key), LoginFailure(key=ip_key)])


def clear(session: Session, email: str) -> None:
    """Forget this email's failures (after a successful sign-in)."""
    session.execute(delete(LoginFailure).where(LoginFailure.key == digest("email:" + email)))


def prune(session: Session, *, window_minutes: int) -> int:
    """Delete failures too old to matter; returns how many went."""
    since = utcnow() - timedelta(minutes=window_minutes)
    return rowcount(session.execute(delete(LoginFailure).where(LoginFailure.at < since)))
