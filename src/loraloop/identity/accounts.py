"""Accounts: sign-up by registration mode, sign-in without enumeration, invites, admins."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loraloop.config import Registration, Settings
from loraloop.db.engine import Database, rowcount, utcnow
from loraloop.db.tables import Invite, User
from loraloop.errors import Conflict, InvalidRequest, PermissionDenied, Unauthenticated
from loraloop.identity import passwords, throttle
from loraloop.identity.tokens import digest, new_secret

__all__ = [
    "LOCALES",
    "ROLES",
    "IssuedInvite",
    "create_invite",
    "create_user",
    "has_admin",
    "normalise_email",
    "sign_in",
    "sign_up",
    "update_profile",
]

ROLES = ("admin", "member")
LOCALES = ("ja", "en")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
WRONG_CREDENTIALS = "Email or password is incorrect."


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _check_new_account(email: str, password: str, display_name: str) -> None:
    problems = []
    if len(email) > 254 or not _EMAIL.match(email):
        problems.append(f"email {email!r} is not an email address like name@example.com")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        problems.append(
            f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters (got {len(password)})"
        )
    if not 1 <= len(display_name.strip()) <= 80:
        problems.append("display name must be 1 to 80 characters")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_account")


def create_user(
    session: Session,
    *,
    email: str,
    password: str,
    display_name: str = "",
    role: str = "member",
    locale: str = "ja",
) -> User:
    """Create an account after validating every field; refuses a taken email."""
    email = normalise_email(email)
    display_name = display_name.strip() or email.split("@")[0]
    _check_new_account(email, password, display_name)
    if role not in ROLES:
        raise InvalidRequest(f"role {role!r} is not one of {', '.join(ROLES)}", param="role")
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict(f"an account with email {email} already exists", code="email_taken")
    user = User(
        email=email,
        display_name=display_name[:80],
        password_hash=passwords.hash_password(password),
        role=role,
        locale=locale if locale in LOCALES else "ja",
    )
    session.add(user)
    session.flush()
    return user


def _take_invite(session: Session, code: str, user_id: int) -> None:
    now = utcnow()
    taken = session.execute(
        update(Invite)
        .where(Invite.code_hash == digest(code), Invite.used_at.is_(None), Invite.expires_at > now)
        .values(used_at=now, used_by=user_id)
    )
    if rowcount(taken) != 1:
        raise InvalidRequest(
            "this invite code is unknown, already used or expired; ask an admin for a new one",
            code="invalid_invite",
            param="invite",
        )


def sign_up(
    session: Session,
    settings: Settings,
    *,
    email: str,
    password: str,
    display_name: str = "",
    invite: str | None = None,
    locale: str = "ja",
) -> User:
    """Create an account as the registration mode allows. An admin invite always works."""
    role = "member"
    if invite:
        found = session.scalar(select(Invite).where(Invite.code_hash == digest(invite)))
        role = found.role if found is not None else "member"
    elif settings.registration == Registration.invite:
        raise PermissionDenied(
            "sign-up on this server needs an invite code from an admin", code="invite_required"
        )
    elif settings.registration == Registration.closed:
        raise PermissionDenied("sign-up on this server is closed", code="registration_closed")
    user = create_user(
        session,
        email=email,
        password=password,
        display_name=display_name,
        role=role,
        locale=locale,
    )
    if invite:
        _take_invite(session, invite, user.id)
    return user


def sign_in(db: Database, settings: Settings, *, email: str, password: str, client: str) -> User:
    """Check a password. Unknown account and wrong password look and take the same.

    The argon2 check runs between two short transactions, so sign-ins never queue behind
    each other on SQLite's single writer."""
    email = normalise_email(email)
    limit, window = settings.login_max_failures, settings.login_window_minutes
    with db.session() as session:
        throttle.prune(session, window_minutes=window)
        throttle.check(session, email, client, limit=limit, window_minutes=window)
        user = session.scalar(select(User).where(User.email == email))
    if user is None:
        ok = passwords.verify_unknown_user(password)
    else:
        ok = passwords.verify_password(user.password_hash, password) and user.is_active
    rehash = (
        passwords.hash_password(password)
        if ok and user and passwords.needs_rehash(user.password_hash)
        else None
    )
    with db.session() as session:
        if not ok or user is None:
            throttle.record_failure(session, email, client)
        else:
            throttle.clear(session, email)
            if rehash is not None:
                session.execute(update(User).where(User.id == user.id).values(password_hash=rehash))
            return user
    raise Unauthenticated(WRONG_CREDENTIALS, code="wrong_credentials")


@dataclass(frozen=True)
class IssuedInvite:
    code: str = field(repr=False)
    role: str
    expires_in_days: int


def create_invite(
    session: Session, *, created_by: int | None, role: str = "member", days: int = 7
) -> IssuedInvite:
    """A one-time sign-up code; only its hash is stored, so it is shown once."""
    if role not in ROLES:
        raise InvalidRequest(f"role {role!r} is not one of {', '.join(ROLES)}", param="role")
    code = new_secret(24)
    session.add(
        Invite(
            code_hash=digest(code),
            role=role,
            created_by=created_by,
            expires_at=utcnow() + timedelta(days=days),
        )
    )
    return IssuedInvite(code=code, role=role, expires_in_days=days)


def has_admin(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).where(User.role == "admin")))


def update_profile(
    session: Session, user: User, *, display_name: str | None = None, locale: str | None = None
) -> User:
    if locale is not None:
        if locale not in LOCALES:
            raise InvalidRequest(
                f"locale {locale!r} is not one of {', '.join(LOCALES)}", param="locale"
            )
        user.locale = locale
    if display_name is not None:
        if not 1 <= len(display_name.strip()) <= 80:
            raise InvalidRequest("display name must be 1 to 80 characters", param="display_name")
        user.display_name = display_name.strip()
    session.add(user)
    return user
