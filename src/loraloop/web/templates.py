"""Jinja2 templates (autoescaped, strict about undefined names) and ``render``, which gives
every template ``t``, ``lang``, ``user``, ``csrf_token`` and ``here`` (the path to come back
to after the language switch)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from loraloop import __version__
from loraloop.config import Settings
from loraloop.web import csrf, i18n
from loraloop.web.viewer import Viewer

__all__ = ["SECURITY_HEADERS", "THEMES", "THEME_COOKIE", "render", "templates", "theme_of"]

THEME_COOKIE = "loraloop_theme"
#: ``auto`` follows the system's light or dark preference.
THEMES = ("light", "dark", "auto")

_FOLDER = Path(__file__).resolve().parent / "templates"

#: Pages load nothing but this server's own files: no inline script or style, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(_FOLDER),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
)


def _here(request: Request) -> str:
    if request.method not in ("GET", "HEAD"):
        return "/"  # the language switch must not come back to a form's POST
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def theme_of(request: Request) -> str:
    chosen = request.cookies.get(THEME_COOKIE, "auto")
    return chosen if chosen in THEMES else "auto"


def _js_texts(viewer: Viewer) -> Any:
    """``js_texts("playground.", ...)``: those catalog entries as JSON for a page's script,
    to put inside ``<script type="application/json" id="texts">`` (``<`` escaped)."""
    catalog = i18n.catalog(viewer.lang)
    english = i18n.catalog("en")

    def pick(*prefixes: str) -> Markup:
        chosen = {k: catalog.get(k) or v for k, v in english.items() if k.startswith(prefixes)}
        return Markup(json.dumps(chosen, ensure_ascii=False).replace("<", "\\u003c"))  # noqa: S704

    return pick


def render(
    request: Request,
    viewer: Viewer,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The page ``name`` for ``viewer``; anonymous viewers also get the CSRF cookie."""
    token = csrf.token_for(request, viewer.web_session)
    values: dict[str, Any] = {
        "t": viewer.t,
        "lang": viewer.lang,
        "theme": theme_of(request),
        "user": viewer.user,
        "csrf_token": token,
        "here": _here(request),
        "version": __version__,
        "js_texts": _js_texts(viewer),
        **(context or {}),
    }
    response = templates.TemplateResponse(
        request, name, values, status_code=status_code, headers=headers
    )
    if viewer.web_session is None:
        settings: Settings = request.app.state.settings
        csrf.remember(response, request, token, settings)
    response.headers.update(SECURITY_HEADERS)
    return response
