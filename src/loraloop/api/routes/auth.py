"""Accounts and browser sessions over JSON."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from loraloop.api.deps import (
    AppDatabase,
    AppSettings,
    CurrentAuth,
    CurrentUser,
    DbSession,
    client_address,
)
from loraloop.api.schemas import ProfileUpdate, SessionPublic, SignIn, SignUp, UserPublic
from loraloop.config import Settings
from loraloop.db.tables import User
from loraloop.identity import accounts, sessions

router = APIRouter(prefix="/api", tags=["accounts"])


def set_session_cookie(
    response: Response, settings: Settings, issued: sessions.IssuedSession
) -> None:
    response.set_cookie(
        sessions.COOKIE,
        issued.token,
        max_age=issued.max_age,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def _begin(
    request: Request, response: Response, db: AppDatabase, settings: Settings, user: User
) -> SessionPublic:
    with db.session() as session:
        issued = sessions.start(
            session,
            user,
            days=settings.session_days,
            replacing=request.cookies.get(sessions.COOKIE),
        )
    set_session_cookie(response, settings, issued)
    return SessionPublic(user=UserPublic.model_validate(user), csrf_token=issued.csrf_token)


@router.post("/auth/signup", status_code=201)
def sign_up(
    body: SignUp, request: Request, response: Response, db: AppDatabase, settings: AppSettings
) -> SessionPublic:
    """Create an account (as the registration mode allows) and sign in."""
    with db.session() as session:
        user = accounts.sign_up(
            session,
            settings,
            email=body.email,
            password=body.password,
            display_name=body.display_name,
            invite=body.invite,
            locale=body.locale,
        )
    return _begin(request, response, db, settings, user)


@router.post("/auth/signin")
def sign_in(
    body: SignIn, request: Request, response: Response, db: AppDatabase, settings: AppSettings
) -> SessionPublic:
    """Check email and password and start a session (the cookie rotates)."""
    user = accounts.sign_in(
        db, settings, email=body.email, password=body.password, client=client_address(request)
    )
    return _begin(request, response, db, settings, user)


@router.post("/auth/signout", status_code=204)
def sign_out(request: Request, response: Response, auth: CurrentAuth, session: DbSession) -> None:
    """End this browser session."""
    token = request.cookies.get(sessions.COOKIE)
    if token:
        sessions.end(session, token)
    response.delete_cookie(sessions.COOKIE, path="/")


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    """The signed-in account."""
    return UserPublic.model_validate(user)


@router.patch("/me")
def update_me(body: ProfileUpdate, user: CurrentUser, session: DbSession) -> UserPublic:
    """Change display name or interface language."""
    accounts.update_profile(session, user, display_name=body.display_name, locale=body.locale)
    return UserPublic.model_validate(user)
