"""Page routes: dashboard, sign-in, sign-up, sign-out and the language switch.

Each route checks the form's CSRF token, calls one service and renders or redirects (303,
so a reload never resubmits a form). Service errors re-render the form in the page language.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase, AppSettings, client_address
from loraloop.api.routes.auth import set_session_cookie
from loraloop.config import Registration, Settings
from loraloop.db.engine import Database
from loraloop.db.tables import User
from loraloop.errors import (
    Conflict,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from loraloop.identity import accounts, api_keys, sessions
from loraloop.jobs import queue
from loraloop.web import catalog_views, csrf, i18n
from loraloop.web.templates import THEME_COOKIE, THEMES, render
from loraloop.web.viewer import PageViewer

__all__ = ["router", "safe_next"]

router = APIRouter(include_in_schema=False)

#: Errors a form shows next to its fields; anything else becomes the error page.
FORM_ERRORS = (InvalidRequest, Unauthenticated, PermissionDenied, Conflict, RateLimited)
RECENT_JOBS = 10

Field = Annotated[str, Form(max_length=1024)]
Token = Annotated[str, Form(max_length=256)]


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def safe_next(path: str) -> str:
    """``path`` when it stays on this site (one leading ``/``), else ``/``."""
    on_site = path.startswith("/") and not path.startswith(("//", "/\\"))
    if not on_site or any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in path):
        return "/"
    return path


def _signed_in(request: Request, db: Database, settings: Settings, user: User) -> Response:
    """Start a session (rotating the old cookie) and go to the dashboard."""
    with db.session() as session:
        issued = sessions.start(
            session,
            user,
            days=settings.session_days,
            replacing=request.cookies.get(sessions.COOKIE),
        )
    response = _see_other("/")
    set_session_cookie(response, settings, issued)
    _set_language_cookie(response, settings, user.locale)
    return response


def _set_language_cookie(response: Response, settings: Settings, lang: str) -> None:
    response.set_cookie(
        i18n.COOKIE,
        lang,
        max_age=365 * 86400,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def _form_error(exc: Exception) -> tuple[int, dict[str, str]]:
    assert isinstance(exc, FORM_ERRORS)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else {}
    return exc.status_code, headers


@router.get("/", name="dashboard")
def dashboard(request: Request, viewer: PageViewer, db: AppDatabase) -> Response:
    """The signed-in user's home: adapters, deployments, jobs, feedback, keys, next steps."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        jobs = queue.list_own(session, viewer.user, limit=RECENT_JOBS)
        active_keys = api_keys.count_active(session, viewer.user)
        context = catalog_views.dashboard_context(session, viewer.user, active_keys=active_keys)
    context.update(jobs=jobs, active_keys=active_keys, active="dashboard")
    return render(request, viewer, "dashboard.html", context)


def _signin_form(settings: Settings, **context: object) -> dict[str, object]:
    return {
        "email": "",
        "error": None,
        "signup_open": settings.registration != Registration.closed,
        "here": "/signin",
        **context,
    }


@router.get("/signin", name="signin_page")
def signin_page(request: Request, viewer: PageViewer, settings: AppSettings) -> Response:
    """The sign-in form."""
    if viewer.user is not None:
        return _see_other("/")
    return render(request, viewer, "signin.html", _signin_form(settings))


@router.post("/signin", name="signin")
def signin(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    settings: AppSettings,
    csrf_token: Token = "",
    email: Field = "",
    password: Field = "",
) -> Response:
    """Check the email and password; on success start a session and go to the dashboard."""
    csrf.check(request, csrf_token, viewer.web_session)
    try:
        user = accounts.sign_in(
            db, settings, email=email, password=password, client=client_address(request)
        )
    except FORM_ERRORS as exc:
        status, headers = _form_error(exc)
        message = i18n.error_message(viewer.t, exc)
        context = _signin_form(settings, email=email, error=message)
        return render(request, viewer, "signin.html", context, status_code=status, headers=headers)
    return _signed_in(request, db, settings, user)


def _signup_form(settings: Settings, invite: str, **context: object) -> dict[str, object]:
    closed = settings.registration == Registration.closed and not invite
    return {
        "email": "",
        "display_name": "",
        "invite": invite,
        "show_invite": bool(invite) or settings.registration == Registration.invite,
        "closed": closed,
        "invite_needed": settings.registration == Registration.invite and not invite,
        "min_password": accounts.MIN_PASSWORD,
        "max_password": accounts.MAX_PASSWORD,
        "error": None,
        "here": "/signup",
        **context,
    }


@router.get("/signup", name="signup_page")
def signup_page(
    request: Request,
    viewer: PageViewer,
    settings: AppSettings,
    invite: Annotated[str, Query(max_length=256)] = "",
) -> Response:
    """The sign-up form; ``?invite=`` pre-fills an invite code (links from admins)."""
    if viewer.user is not None:
        return _see_other("/")
    context = _signup_form(settings, invite, here=request.url.path + _query(request))
    return render(request, viewer, "signup.html", context)


def _query(request: Request) -> str:
    return f"?{request.url.query}" if request.url.query else ""


@router.post("/signup", name="signup")
def signup(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    settings: AppSettings,
    csrf_token: Token = "",
    email: Field = "",
    display_name: Field = "",
    password: Field = "",
    invite: Field = "",
) -> Response:
    """Create an account in the page language, sign in and go to the dashboard."""
    csrf.check(request, csrf_token, viewer.web_session)
    try:
        with db.session() as session:
            user = accounts.sign_up(
                session,
                settings,
                email=email,
                password=password,
                display_name=display_name,
                invite=invite.strip() or None,
                locale=viewer.lang,
            )
    except FORM_ERRORS as exc:
        status, headers = _form_error(exc)
        context = _signup_form(
            settings,
            invite,
            email=email,
            display_name=display_name,
            error=i18n.error_message(viewer.t, exc),
        )
        return render(request, viewer, "signup.html", context, status_code=status, headers=headers)
    return _signed_in(request, db, settings, user)


@router.post("/signout", name="signout")
def signout(
    request: Request, viewer: PageViewer, db: AppDatabase, csrf_token: Token = ""
) -> Response:
    """End this browser's session. Without a live session there is nothing to protect."""
    cookie = request.cookies.get(sessions.COOKIE)
    if viewer.web_session is not None and cookie:
        csrf.check(request, csrf_token, viewer.web_session)
        with db.session() as session:
            sessions.end(session, cookie)
    response = _see_other("/signin")
    response.delete_cookie(sessions.COOKIE, path="/")
    return response


@router.post("/lang", name="language")
def language(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    settings: AppSettings,
    csrf_token: Token = "",
    lang: Annotated[str, Form(max_length=8)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "/",
) -> Response:
    """Switch the interface language (kept on the account when signed in) and go back."""
    csrf.check(request, csrf_token, viewer.web_session)
    if viewer.user is not None:
        with db.session() as session:
            accounts.update_profile(session, viewer.user, locale=lang)
    elif lang not in i18n.LANGUAGES:
        raise InvalidRequest(
            f"language {lang!r} is not one of {', '.join(i18n.LANGUAGES)}", param="lang"
        )
    response = _see_other(safe_next(next_path))
    _set_language_cookie(response, settings, lang)
    return response


@router.post("/theme", name="theme")
def theme(
    request: Request,
    viewer: PageViewer,
    settings: AppSettings,
    csrf_token: Token = "",
    theme: Annotated[str, Form(max_length=8)] = "",
    next_path: Annotated[str, Form(alias="next", max_length=2048)] = "/",
) -> Response:
    """Switch between the light and dark theme (kept in a cookie) and go back."""
    csrf.check(request, csrf_token, viewer.web_session)
    if theme not in THEMES:
        raise InvalidRequest(f"theme {theme!r} is not one of {', '.join(THEMES)}", param="theme")
    response = _see_other(safe_next(next_path))
    response.set_cookie(
        THEME_COOKIE,
        theme,
        max_age=365 * 86400,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )
    return response
