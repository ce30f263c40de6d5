"""The catalogs cannot fall behind: same keys in both, every key the code uses exists, no
empty or untranslated Japanese; plus the language choice and error-message mapping."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from loraloop.errors import (
    InvalidRequest,
    LoraloopError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from loraloop.jobs.kinds import KINDS
from loraloop.jobs.states import Status
from loraloop.web import i18n

WEB = Path(i18n.__file__).resolve().parent
_KEY_USE = re.compile(r"""\bt\(\s*["']([A-Za-z0-9_.]+)["']\s*[,)]""")
_JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uff01-\uff5e]")
_LETTERS = re.compile(r"[A-Za-z]")

#: Keys whose Japanese text is rightly the same as the English: names, not words.
NAMES = {"app.name", "lang.en", "lang.ja"}


def _used_keys() -> dict[str, set[str]]:
    """Every literal ``t("key")`` in the web package's templates and Python, by file."""
    files = [*WEB.glob("templates/*.html"), *WEB.glob("*.py")]
    assert len(files) > 5
    return {path.name: set(_KEY_USE.findall(path.read_text(encoding="utf-8"))) for path in files}


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_both_catalogs_have_exactly_the_same_keys() -> None:
    ja, en = set(i18n.catalog("ja")), set(i18n.catalog("en"))
    assert not ja - en, f"only in ja.json: {sorted(ja - en)}"
    assert not en - ja, f"only in en.json: {sorted(en - ja)}"


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_every_key_the_code_uses_exists(lang: str) -> None:
    texts = i18n.catalog(lang)
    used = _used_keys()
    assert sum(len(keys) for keys in used.values()) > 40, "the key pattern stopped matching"
    missing = {name: sorted(keys - set(texts)) for name, keys in used.items() if keys - set(texts)}
    assert not missing, f"add these keys to {lang}.json: {missing}"


DYNAMIC = [
    # name, keys built at run time
    ("error codes", list(i18n.ERROR_KEYS.values())),
    ("error statuses", list(i18n.STATUS_KEYS.values())),
    ("job statuses", [f"job.status.{status.value}" for status in Status]),
    ("job kinds", [f"job.kind.{name}" for name in KINDS]),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(("name", "keys"), DYNAMIC, ids=[d[0] for d in DYNAMIC])
def test_keys_built_at_run_time_exist(name: str, keys: list[str], lang: str) -> None:
    missing = sorted(set(keys) - set(i18n.catalog(lang)))
    assert not missing, f"add these {name} to {lang}.json: {missing}"


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_no_empty_values(lang: str) -> None:
    empty = [key for key, text in i18n.catalog(lang).items() if not text.strip()]
    assert not empty, f"empty texts in {lang}.json: {empty}"


def test_japanese_texts_are_translated() -> None:
    ja, en = i18n.catalog("ja"), i18n.catalog("en")
    untranslated = [
        key
        for key, text in en.items()
        if key not in NAMES and _LETTERS.search(text) and not _JAPANESE.search(ja[key])
    ]
    assert not untranslated, f"these ja.json texts have no Japanese: {untranslated}"


def test_both_catalogs_use_the_same_placeholders() -> None:
    ja, en = i18n.catalog("ja"), i18n.catalog("en")
    different = [key for key in en if _fields(en[key]) != _fields(ja[key])]
    assert not different, f"placeholders differ between ja.json and en.json: {different}"


CHOICES = [
    # name, user locale, cookie, accept-language, expected
    ("nothing known: Japanese", None, None, "", "ja"),
    ("account wins over cookie", "en", "ja", "ja", "en"),
    ("cookie wins over browser", None, "en", "ja-JP", "en"),
    ("browser's first supported", None, None, "fr-FR,en-GB;q=0.8,ja;q=0.5", "en"),
    ("weights beat order", None, None, "en;q=0.4,ja;q=0.9", "ja"),
    ("q=0 means never", None, None, "en;q=0,ja;q=0", "ja"),
    ("nonsense header", None, None, ";;q=x,,", "ja"),
    ("unknown values ignored", "de", "fr", "en", "en"),
]


@pytest.mark.parametrize(
    ("name", "locale", "cookie", "accept", "expected"), CHOICES, ids=[c[0] for c in CHOICES]
)
def test_language_choice(
    name: str, locale: str | None, cookie: str | None, accept: str, expected: str
) -> None:
    assert i18n.choose(locale, cookie, accept) == expected


def test_translator_formats_and_falls_back() -> None:
    t = i18n.translator("ja")
    assert t("dashboard.welcome", name="{x}") == "ようこそ、{x}さん"
    assert t("no.such.key") == "no.such.key"


MESSAGES: list[tuple[str, LoraloopError, str]] = [
    # name, error, expected English text
    (
        "mapped code",
        Unauthenticated("Email or password is incorrect.", code="wrong_credentials"),
        "Email or password is incorrect.",
    ),
    (
        "rate limit in minutes",
        RateLimited("slow down", retry_after=900, code="too_many_sign_in_attempts"),
        "Too many failed sign-in attempts. Wait 15 minutes and try again.",
    ),
    ("unmapped code keeps the message", InvalidRequest("field 'x' is bad"), "field 'x' is bad"),
    (
        "csrf",
        PermissionDenied("missing token", code="csrf_failed"),
        i18n.catalog("en")["error.csrf_failed"],
    ),
]


@pytest.mark.parametrize(("name", "error", "expected"), MESSAGES, ids=[m[0] for m in MESSAGES])
def test_error_message(name: str, error: LoraloopError, expected: str) -> None:
    assert i18n.error_message(i18n.translator("en"), error) == expected


def test_unknown_catalog_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of"):
        i18n.catalog("fr")
