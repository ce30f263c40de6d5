"""Web pages: installs the page routes, ``/static`` and the HTML error page on the app."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from loraloop.errors import LoraloopError, RateLimited
from loraloop.web import (
    i18n,
    pages_apps,
    pages_catalog,
    pages_community,
    pages_data,
    pages_hub,
    pages_maintenance,
    pages_playground,
    pages_providers,
    pages_rewards,
)
from loraloop.web.routes import router
from loraloop.web.templates import render
from loraloop.web.viewer import resolve

__all__ = ["install", "render_error"]

_STATIC = Path(__file__).resolve().parent / "static"


def render_error(request: Request, exc: LoraloopError) -> Response:
    """The error page in the viewer's language (server errors skip the database)."""
    status = exc.status_code
    viewer = resolve(request, anonymous=status >= 500)
    title = i18n.STATUS_KEYS.get(status, "error.title.500" if status >= 500 else "error.title.400")
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    context = {
        "status": status,
        "title": viewer.t(title),
        "message": i18n.error_message(viewer.t, exc),
    }
    return render(request, viewer, "error.html", context, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register pages, static files and the HTML error renderer on ``app``."""
    app.mount("/static", StaticFiles(directory=_STATIC), name="static")
    app.include_router(router)
    areas = (
        pages_data,
        pages_playground,
        pages_catalog,
        pages_maintenance,
        pages_apps,
        pages_community,
        pages_hub,
        pages_providers,
        pages_rewards,
    )
    for area in areas:
        app.include_router(area.router)
    app.state.render_error = render_error
