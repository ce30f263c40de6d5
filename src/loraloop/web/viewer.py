"""Who is looking at a page: the signed-in user and session (by cookie only) and the page
language. Resolved in a short transaction of its own, so a route may open its own later
(SQLite allows one writer at a time)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import User, WebSession
from loraloop.identity import sessions
from loraloop.web import i18n

__all__ = ["PageViewer", "Viewer", "resolve"]


@dataclass(frozen=True)
class Viewer:
    user: User | None
    web_session: WebSession | None
    lang: str

    @property
    def t(self) -> i18n.Translate:
        return i18n.translator(self.lang)


def _language(request: Request, user: User | None) -> str:
    return i18n.choose(
        user.locale if user is not None else None,
        request.cookies.get(i18n.COOKIE),
        request.headers.get("accept-language", ""),
    )


def resolve(request: Request, *, anonymous: bool = False) -> Viewer:
    """The viewer of ``request`` (cached on it); ``anonymous`` skips the database."""
    cached = getattr(request.state, "viewer", None)
    if isinstance(cached, Viewer):
        return cached
    found = None
    token = request.cookies.get(sessions.COOKIE)
    if token and not anonymous:
        db: Database = request.app.state.db
        settings: Settings = request.app.state.settings
        with db.session() as session:
            found = sessions.resolve(session, token, days=settings.session_days)
    user, web_session = found if found is not None else (None, None)
    viewer = Viewer(user=user, web_session=web_session, lang=_language(request, user))
    if not anonymous:
        request.state.viewer = viewer
    return viewer


def _viewer(request: Request) -> Viewer:
    return resolve(request)


PageViewer = Annotated[Viewer, Depends(_viewer)]
