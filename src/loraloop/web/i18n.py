"""Translations: flat JSON catalogs (``locales/<lang>.json`` plus one file per area of the
interface in ``locales/<lang>/*.json``), ``t(key, **params)`` and the
choice of language — the signed-in user's ``locale``, else the ``loraloop_lang`` cookie, else
``Accept-Language``, else Japanese."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path

from loraloop.errors import LoraloopError, RateLimited
from loraloop.identity.accounts import LOCALES, MIN_PASSWORD

__all__ = [
    "COOKIE",
    "DEFAULT",
    "ERROR_KEYS",
    "LANGUAGES",
    "STATUS_KEYS",
    "Translate",
    "catalog",
    "choose",
    "error_message",
    "translator",
]

LANGUAGES: tuple[str, ...] = LOCALES
DEFAULT = "ja"
COOKIE = "loraloop_lang"
_FOLDER = Path(__file__).resolve().parent / "locales"

#: Service error ``code`` -> catalog key. Codes not listed show the service's English message.
ERROR_KEYS: dict[str, str] = {
    "wrong_credentials": "error.wrong_credentials",
    "too_many_sign_in_attempts": "error.too_many_sign_in_attempts",
    "email_taken": "error.email_taken",
    "invite_required": "error.invite_required",
    "registration_closed": "error.registration_closed",
    "invalid_invite": "error.invalid_invite",
    "invalid_account": "error.invalid_account",
    "csrf_failed": "error.csrf_failed",
    "not_found": "error.not_found",
    "payload_too_large": "error.payload_too_large",
    "internal_error": "error.internal",
}

#: HTTP status -> catalog key of the error page's title.
STATUS_KEYS: dict[int, str] = {
    400: "error.title.400",
    401: "error.title.401",
    403: "error.title.403",
    404: "error.title.404",
    405: "error.title.405",
    409: "error.title.409",
    413: "error.title.413",
    429: "error.title.429",
    500: "error.title.500",
}

Translate = Callable[..., str]


@cache
def catalog(lang: str) -> Mapping[str, str]:
    """The catalog of ``lang`` (one of ``LANGUAGES``), read once."""
    if lang not in LANGUAGES:
        raise ValueError(f"language {lang!r} is not one of {', '.join(LANGUAGES)}")
    data: dict[str, str] = {}
    for path in [_FOLDER / f"{lang}.json", *sorted((_FOLDER / lang).glob("*.json"))]:
        part: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
        twice = sorted(set(part) & set(data))
        if twice:
            raise ValueError(f"{path.name} repeats keys defined earlier: {twice}")
        data.update(part)
    return data


def translator(lang: str) -> Translate:
    """``t(key, **params)`` for ``lang``; a missing key falls back to English, then the key."""
    own, english = catalog(lang), catalog("en")

    def t(key: str, **params: object) -> str:
        text = own.get(key) or english.get(key) or key
        return text.format(**params) if params else text

    return t


def _from_accept_language(header: str) -> str | None:
    """The supported language the browser prefers most (``q`` weights, ties in order)."""
    best: tuple[float, str] | None = None
    for part in header.split(","):
        tag, _, params = part.strip().partition(";")
        primary = tag.strip().split("-")[0].lower()
        if primary not in LANGUAGES:
            continue
        weight = 1.0
        name, _, value = params.strip().partition("=")
        if name.strip() == "q":
            try:
                weight = float(value)
            except ValueError:
                continue
        if weight > 0 and (best is None or weight > best[0]):
            best = (weight, primary)
    return best[1] if best else None


def choose(user_locale: str | None, cookie: str | None, accept_language: str) -> str:
    """The page language: the account's, else the cookie's, else the browser's, else ja."""
    for candidate in (user_locale, cookie):
        if candidate in LANGUAGES:
            assert candidate is not None
            return candidate
    return _from_accept_language(accept_language) or DEFAULT


def error_message(t: Translate, exc: LoraloopError) -> str:
    """A service error in the page language; unmapped codes keep the English message."""
    key = ERROR_KEYS.get(exc.code)
    if key is None:
        return exc.message
    minutes = max(1, exc.retry_after // 60) if isinstance(exc, RateLimited) else 0
    return t(key, min=MIN_PASSWORD, minutes=minutes)
