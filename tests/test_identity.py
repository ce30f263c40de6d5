"""Accounts, invites and sign-in rules at the service level."""

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import LoginFailure, User, WebSession
from loraloop.errors import (
    Conflict,
    InvalidRequest,
    LoraloopError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from loraloop.identity import accounts, passwords, sessions
from loraloop.identity.tokens import digest
from tests.factories import PASSWORD, make_user


def _sign_up(db: Database, settings: Settings, **kwargs: object) -> User:
    kwargs.setdefault("email", "new@example.com")
    kwargs.setdefault("password", PASSWORD)
    with db.session() as session:
        return accounts.sign_up(session, settings, **kwargs)  # type: ignore[arg-type]


MODES = [
    ("open", None, None),
    ("invite", None, PermissionDenied),
    ("closed", None, PermissionDenied),
    ("invite", "member", None),
    ("closed", "admin", None),
]


@pytest.mark.parametrize(("mode", "invite_role", "error"), MODES)
def test_registration_modes(
    db: Database,
    settings: Settings,
    mode: str,
    invite_role: str | None,
    error: type[LoraloopError] | None,
) -> None:
    settings = settings.model_copy(update={"registration": mode})
    code = None
    if invite_role:
        with db.session() as session:
            code = accounts.create_invite(session, created_by=None, role=invite_role).code
    if error:
        with pytest.raises(error):
            _sign_up(db, settings, invite=code)
        with db.session() as session:
            assert session.scalar(select(User)) is None
    else:
        user = _sign_up(db, settings, invite=code)
        assert user.role == (invite_role or "member")


def test_first_account_is_not_admin(db: Database, settings: Settings) -> None:
    assert _sign_up(db, settings).role == "member"


def test_invite_is_single_use(db: Database, settings: Settings) -> None:
    with db.session() as session:
        code = accounts.create_invite(session, created_by=None).code
    _sign_up(db, settings, invite=code)
    with pytest.raises(InvalidRequest, match="already used"):
        _sign_up(db, settings, invite=code, email="second@example.com")
    with db.session() as session:  # the refused sign-up left no account behind
        assert session.scalar(select(User).where(User.email == "second@example.com")) is None


def test_validation_reports_every_problem(db: Database, settings: Settings) -> None:
    with pytest.raises(InvalidRequest) as info:
        _sign_up(db, settings, email="not-an-email", password="short")
    assert "not-an-email" in info.value.message
    assert "password must be 10 to 256 characters (got 5)" in info.value.message


def test_email_is_unique_case_insensitively(db: Database, settings: Settings) -> None:
    _sign_up(db, settings, email="Mika@Example.com")
    with pytest.raises(Conflict):
        _sign_up(db, settings, email="mika@example.COM")


def test_passwords_are_argon2id(db: Database) -> None:
    user = make_user(db)
    assert user.password_hash.startswith("$argon2id$")
    assert PASSWORD not in user.password_hash


def _attempt(db: Database, settings: Settings, email: str, password: str) -> LoraloopError:
    with pytest.raises(LoraloopError) as info:
        accounts.sign_in(db, settings, email=email, password=password, client="10.0.0.1")
    return info.value


def test_unknown_user_and_wrong_password_look_the_same(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = make_user(db)
    calls: list[str] = []
    real: Callable[[str, str], bool] = passwords.verify_password
    monkeypatch.setattr(
        passwords, "verify_password", lambda h, p: calls.append(h[:9]) or real(h, p)
    )
    unknown = _attempt(db, settings, "nobody@example.com", PASSWORD)
    wrong = _attempt(db, settings, user.email, "wrong password!")
    assert (type(unknown), unknown.message, unknown.code) == (
        type(wrong),
        wrong.message,
        wrong.code,
    )
    assert isinstance(unknown, Unauthenticated)
    # both paths ran exactly one argon2id verification, so they cost the same time
    assert calls == ["$argon2id", "$argon2id"]


@pytest.mark.parametrize("exists", [True, False])
def test_throttle_after_repeated_failures(db: Database, settings: Settings, exists: bool) -> None:
    email = make_user(db).email if exists else "ghost@example.com"
    for _ in range(settings.login_max_failures):
        assert isinstance(_attempt(db, settings, email, "wrong password!"), Unauthenticated)
    throttled = _attempt(db, settings, email, PASSWORD)  # even the right password waits
    assert isinstance(throttled, RateLimited)
    assert throttled.retry_after == settings.login_window_minutes * 60


def test_success_clears_failures(db: Database, settings: Settings) -> None:
    user = make_user(db)
    for _ in range(settings.login_max_failures - 1):
        _attempt(db, settings, user.email, "wrong password!")
    accounts.sign_in(db, settings, email=user.email, password=PASSWORD, client="10.0.0.1")
    for _ in range(settings.login_max_failures - 1):
        assert isinstance(_attempt(db, settings, user.email, "wrong password!"), Unauthenticated)


def test_old_failures_and_expired_sessions_are_pruned(db: Database, settings: Settings) -> None:
    user = make_user(db)
    _attempt(db, settings, user.email, "wrong password!")
    with db.session() as session:
        old = utcnow() - timedelta(minutes=settings.login_window_minutes + 1)
        session.execute(update(LoginFailure).values(at=old))
        stale = sessions.start(session, user, days=1)
        session.execute(update(WebSession).values(expires_at=old))
    accounts.sign_in(db, settings, email=user.email, password=PASSWORD, client="10.0.0.2")
    with db.session() as session:
        sessions.start(session, user, days=1)
    with db.session() as session:
        assert session.scalars(select(LoginFailure)).all() == []
        assert session.get(WebSession, digest(stale.token)) is None
