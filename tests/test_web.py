"""The web shell: pages in Japanese and English, form CSRF, sign-in/up/out, the language
switch, HTML error pages and the registration modes."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from loraloop.api.app import create_app
from loraloop.config import Registration, Settings
from loraloop.db.engine import Database
from loraloop.db.tables import User, WebSession
from loraloop.identity import accounts, sessions
from loraloop.web import csrf, i18n
from loraloop.web.routes import safe_next
from tests.factories import PASSWORD, make_job, make_key, make_user

HTML = {"accept": "text/html,application/xhtml+xml"}
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def text_of(lang: str, key: str, **params: object) -> str:
    """A catalog text as it appears in the page (HTML-escaped)."""
    return html.escape(i18n.translator(lang)(key, **params))


def form_token(client: TestClient, path: str = "/signin") -> str:
    """Open ``path`` like a browser and read the form's CSRF token."""
    found = _TOKEN.search(client.get(path).text)
    assert found, f"no csrf_token field on {path}"
    return found.group(1)


def sign_up(
    client: TestClient, *, email: str = "aiko@example.com", name: str = "Aiko", **extra: str
) -> Any:
    data = {"email": email, "display_name": name, "password": PASSWORD, **extra}
    data.setdefault("csrf_token", form_token(client, "/signup"))
    return client.post("/signup", data=data, follow_redirects=False)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    data = {"email": email, "password": password, "csrf_token": form_token(client)}
    return client.post("/signin", data=data, follow_redirects=False)


def switch_language(client: TestClient, lang: str, next_path: str = "/") -> Any:
    data = {"lang": lang, "next": next_path, "csrf_token": form_token(client, "/")}
    return client.post("/lang", data=data, follow_redirects=False)


def count_users(db: Database) -> int:
    with db.session() as session:
        return int(session.scalar(select(func.count()).select_from(User)) or 0)


def user_by_email(db: Database, email: str) -> User:
    with db.session() as session:
        user = session.scalar(select(User).where(User.email == email))
    assert user is not None
    return user


@contextmanager
def client_for(settings: Settings, db: Database, **update: Any) -> Iterator[TestClient]:
    """A browser on an app built with changed settings (e.g. another registration mode)."""
    app = create_app(settings.model_copy(update=update), db)
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        yield test_client


# every page in both languages ----------------------------------------------------------

PAGES = [
    # name, path, signed in, catalog key whose text the page shows, status
    ("sign-in", "/signin", False, "signin.lead", 200),
    ("sign-up", "/signup", False, "signup.lead", 200),
    ("dashboard", "/", True, "dashboard.jobs.heading", 200),
    ("not found", "/no/such/page", False, "error.title.404", 404),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(
    ("name", "path", "signed_in", "key", "status"), PAGES, ids=[p[0] for p in PAGES]
)
def test_every_page_renders_in_both_languages(
    client: TestClient, name: str, path: str, signed_in: bool, key: str, status: int, lang: str
) -> None:
    client.cookies.set(i18n.COOKIE, lang)
    if signed_in:
        assert sign_up(client).status_code == 303
    response = client.get(path, headers=HTML)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")
    assert f'<html lang="{lang}" data-theme="auto">' in response.text
    assert text_of(lang, key) in response.text
    other = "en" if lang == "ja" else "ja"
    assert text_of(other, key) not in response.text


LANGUAGE_CHOICE = [
    # name, accept-language, cookie, expected <html lang>
    ("default is Japanese", "", None, "ja"),
    ("browser prefers English", "en-US,en;q=0.9", None, "en"),
    ("browser prefers Japanese", "ja-JP,en;q=0.5", None, "ja"),
    ("cookie beats the browser", "en-US", "ja", "ja"),
    ("unknown cookie is ignored", "en", "fr", "en"),
]


@pytest.mark.parametrize(
    ("name", "accept", "cookie", "expected"), LANGUAGE_CHOICE, ids=[c[0] for c in LANGUAGE_CHOICE]
)
def test_anonymous_language_comes_from_cookie_then_browser(
    client: TestClient, name: str, accept: str, cookie: str | None, expected: str
) -> None:
    if cookie is not None:
        client.cookies.set(i18n.COOKIE, cookie)
    response = client.get("/signin", headers={"accept-language": accept})
    assert f'<html lang="{expected}" data-theme="auto">' in response.text


def test_static_stylesheet_is_served(client: TestClient) -> None:
    response = client.get("/static/app.css")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert "Noto Sans JP" in response.text


def test_pages_stay_out_of_the_api_spec(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/signin", "/signup", "/signout", "/lang"} & set(paths)


# sign-up, sign-in, sign-out ------------------------------------------------------------


def test_anonymous_dashboard_redirects_to_sign_in(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


def test_sign_up_then_dashboard_shows_the_name_escaped(client: TestClient, db: Database) -> None:
    response = sign_up(client, name="Aiko <script>")
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert client.cookies.get(sessions.COOKIE)
    page = client.get("/").text
    assert text_of("ja", "dashboard.welcome", name="Aiko <script>") in page
    assert "<script>" not in page
    assert user_by_email(db, "aiko@example.com").locale == "ja"  # the page language


def test_sign_up_in_english_makes_an_english_account(client: TestClient, db: Database) -> None:
    client.cookies.set(i18n.COOKIE, "en")
    assert sign_up(client).status_code == 303
    assert user_by_email(db, "aiko@example.com").locale == "en"


def test_dashboard_lists_own_jobs_and_counts_active_keys(client: TestClient, db: Database) -> None:
    sign_up(client)
    me = user_by_email(db, "aiko@example.com")
    job = make_job(db, me)
    make_key(db, me)
    make_job(db, make_user(db))  # someone else's
    page = client.get("/").text
    assert text_of("ja", "job.status.queued") in page
    assert text_of("ja", "job.kind.selftest") in page
    assert f'<a href="/jobs/{job.id}">{job.id}</a>' in page
    assert page.count('<span class="status ') == 1  # one row: someone else's job is not shown
    assert '<span class="stat__value">1</span>' in page


SIGN_UP_ERRORS = [
    # name, form changes, status, catalog key of the message
    ("short password", {"password": "short"}, 400, "error.invalid_account"),
    ("bad email", {"email": "not-an-email"}, 400, "error.invalid_account"),
    ("bad invite", {"invite": "no-such-code"}, 400, "error.invalid_invite"),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(
    ("name", "changes", "status", "key"), SIGN_UP_ERRORS, ids=[c[0] for c in SIGN_UP_ERRORS]
)
def test_sign_up_errors_re_render_the_form_translated(
    client: TestClient,
    db: Database,
    name: str,
    changes: dict[str, str],
    status: int,
    key: str,
    lang: str,
) -> None:
    client.cookies.set(i18n.COOKIE, lang)
    response = sign_up(client, **changes)
    assert response.status_code == status
    assert text_of(lang, key, min=accounts.MIN_PASSWORD) in response.text
    assert 'value="Aiko"' in response.text  # what was typed stays, the password does not
    assert PASSWORD not in response.text
    assert count_users(db) == 0


def test_taken_email_is_refused(client: TestClient, other_client: TestClient) -> None:
    assert sign_up(client).status_code == 303
    response = sign_up(other_client)
    assert response.status_code == 409
    assert text_of("ja", "error.email_taken") in response.text


def test_wrong_password_re_renders_sign_in(client: TestClient, db: Database) -> None:
    user = make_user(db)
    response = sign_in(client, user.email, "wrong password!")
    assert response.status_code == 401
    assert text_of("ja", "error.wrong_credentials") in response.text
    assert f'value="{user.email}"' in response.text
    assert not client.cookies.get(sessions.COOKIE)


def test_repeated_failures_are_throttled_with_retry_after(
    client: TestClient, db: Database, settings: Settings
) -> None:
    user = make_user(db)
    client.cookies.set(i18n.COOKIE, "en")
    for _ in range(settings.login_max_failures):
        assert sign_in(client, user.email, "wrong password!").status_code == 401
    response = sign_in(client, user.email)
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) > 0
    minutes = settings.login_window_minutes
    assert text_of("en", "error.too_many_sign_in_attempts", minutes=minutes) in response.text


def test_sign_in_rotates_the_session_and_opens_the_dashboard(
    client: TestClient, db: Database
) -> None:
    user = make_user(db)
    assert sign_in(client, user.email).status_code == 303
    old = client.cookies[sessions.COOKIE]
    client.get("/")  # signed in: the sign-in page now sends you home
    assert client.get("/signin", follow_redirects=False).headers["location"] == "/"
    assert client.get("/signup", follow_redirects=False).headers["location"] == "/"
    client.cookies.delete(sessions.COOKIE)  # e.g. a second sign-in from a stale tab
    client.cookies.set(sessions.COOKIE, old, domain="127.0.0.1")
    response = client.post(
        "/signin",
        data={"email": user.email, "password": PASSWORD, "csrf_token": form_token(client, "/")},
        follow_redirects=False,
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/"
    assert client.cookies[sessions.COOKIE] != old
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 1


def test_sign_out_ends_the_session(client: TestClient, db: Database) -> None:
    sign_up(client)
    cookie = client.cookies[sessions.COOKIE]
    token = form_token(client, "/")
    response = client.post("/signout", data={"csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(WebSession)) == 0
    client.cookies.set(sessions.COOKIE, cookie)
    assert client.get("/", follow_redirects=False).headers["location"] == "/signin"


def test_sign_out_without_a_session_just_goes_to_sign_in(client: TestClient) -> None:
    response = client.post("/signout", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"


# CSRF ----------------------------------------------------------------------------------


def _signed_in_user(client: TestClient, db: Database) -> User:
    assert sign_up(client).status_code == 303
    return user_by_email(db, "aiko@example.com")


CSRF_CASES = [
    # name, path, form (without csrf_token), signed in first
    ("sign-up", "/signup", {"email": "b@example.com", "display_name": "B", "password": PASSWORD}),
    ("sign-in", "/signin", {"email": "aiko@example.com", "password": PASSWORD}),
    ("language", "/lang", {"lang": "en", "next": "/"}),
    ("sign-out", "/signout", {}),
]
TOKENS = [("missing", None), ("empty", ""), ("wrong", "x" * 43)]


def _state(db: Database) -> tuple[int, int, list[str]]:
    with db.session() as session:
        users = session.scalar(select(func.count()).select_from(User)) or 0
        live = session.scalar(select(func.count()).select_from(WebSession)) or 0
        locales = list(session.scalars(select(User.locale).order_by(User.id)))
    return users, live, locales


@pytest.mark.parametrize(("token_name", "token"), TOKENS, ids=[t[0] for t in TOKENS])
@pytest.mark.parametrize(("name", "path", "form"), CSRF_CASES, ids=[c[0] for c in CSRF_CASES])
def test_forms_without_the_right_token_are_refused_and_change_nothing(
    client: TestClient,
    db: Database,
    name: str,
    path: str,
    form: dict[str, str],
    token_name: str,
    token: str | None,
) -> None:
    _signed_in_user(client, db)
    if path in ("/signup", "/signin"):  # anonymous forms: signed out, holding the csrf cookie
        client.cookies.delete(sessions.COOKIE)
        form_token(client)
    before = _state(db)
    data = dict(form) if token is None else {**form, "csrf_token": token}
    response = client.post(path, data=data, follow_redirects=False)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert _state(db) == before


def test_another_browsers_token_does_not_pass(
    client: TestClient, other_client: TestClient, db: Database
) -> None:
    """Double submit: the field must match this browser's own cookie."""
    foreign = form_token(other_client, "/signup")
    form_token(client, "/signup")
    response = sign_up(client, csrf_token=foreign)
    assert response.status_code == 403
    assert count_users(db) == 0


def test_signed_in_forms_use_the_session_token(client: TestClient, db: Database) -> None:
    sign_up(client)
    with db.session() as session:
        expected = session.scalars(select(WebSession.csrf_token)).one()
    page = client.get("/").text
    assert f'name="csrf_token" value="{expected}"' in page
    assert f'<meta name="csrf-token" content="{expected}">' in page


def test_anonymous_csrf_cookie_is_httponly_and_lax(client: TestClient) -> None:
    cookie = client.get("/signin").headers["set-cookie"]
    assert cookie.startswith(f"{csrf.COOKIE}=")
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert client.cookies[csrf.COOKIE] in client.get("/signin").text
    assert "set-cookie" not in client.get("/signin").headers  # the same token is kept


def test_csrf_failure_in_a_browser_is_a_translated_page(client: TestClient) -> None:
    client.cookies.set(i18n.COOKIE, "en")
    response = client.post("/signin", data={"email": "a@example.com"}, headers=HTML)
    assert response.status_code == 403
    assert '<html lang="en" data-theme="auto">' in response.text
    assert text_of("en", "error.csrf_failed") in response.text


# the language switch -------------------------------------------------------------------


def test_language_choice_persists_on_the_account(
    client: TestClient, other_client: TestClient, db: Database
) -> None:
    _signed_in_user(client, db)
    response = switch_language(client, "en")
    assert response.status_code == 303
    assert '<html lang="en" data-theme="auto">' in client.get("/").text
    assert user_by_email(db, "aiko@example.com").locale == "en"
    token = form_token(client, "/")
    client.post("/signout", data={"csrf_token": token})
    assert sign_in(other_client, "aiko@example.com").status_code == 303  # a fresh browser
    page = other_client.get("/").text
    assert '<html lang="en" data-theme="auto">' in page
    assert text_of("en", "dashboard.jobs.heading") in page


def test_anonymous_switch_sets_only_the_cookie(client: TestClient) -> None:
    token = form_token(client)
    response = client.post(
        "/lang", data={"lang": "en", "next": "/signin", "csrf_token": token}, follow_redirects=False
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/signin"
    assert client.cookies[i18n.COOKIE] == "en"
    assert '<html lang="en" data-theme="auto">' in client.get("/signin").text


def test_unknown_language_is_refused(client: TestClient) -> None:
    token = form_token(client)
    response = client.post("/lang", data={"lang": "fr", "csrf_token": token})
    assert response.status_code == 400
    assert i18n.COOKIE not in client.cookies


def test_theme_switch_is_remembered_and_checked(client: TestClient) -> None:
    token = form_token(client)
    switched = client.post(
        "/theme",
        data={"theme": "dark", "csrf_token": token, "next": "/signin"},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    assert switched.headers["location"] == "/signin"
    assert 'data-theme="dark"' in client.get("/signin").text
    assert client.post("/theme", data={"theme": "neon", "csrf_token": token}).status_code == 400
    assert client.post("/theme", data={"theme": "light"}).status_code == 403
    assert 'data-theme="dark"' in client.get("/signin").text


NEXT_PATHS = [
    # given, where the switch may go back to
    ("//evil.example", "/"),
    ("//evil.example/signin", "/"),
    ("https://evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("\\\\evil.example", "/"),
    ("evil.example", "/"),
    ("javascript:alert(1)", "/"),
    ("/signin\r\nSet-Cookie: x=1", "/"),
    ("", "/"),
    ("/signup?invite=abc", "/signup?invite=abc"),
    ("/", "/"),
]


@pytest.mark.parametrize(("given", "expected"), NEXT_PATHS)
def test_safe_next_only_allows_paths_on_this_site(given: str, expected: str) -> None:
    assert safe_next(given) == expected


@pytest.mark.parametrize("given", ["//evil.example", "https://evil.example/"])
def test_language_switch_does_not_redirect_off_site(client: TestClient, given: str) -> None:
    response = switch_language(client, "en", given)
    assert response.status_code == 303
    assert response.headers["location"] == "/"


# errors --------------------------------------------------------------------------------


def test_unknown_page_is_html_for_browsers_and_json_for_programs(client: TestClient) -> None:
    page = client.get("/no/such/page", headers=HTML)
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert text_of("ja", "error.not_found") in page.text
    api = client.get("/api/no/such/endpoint", headers=HTML)
    assert api.status_code == 404
    assert api.json()["error"]["type"] == "not_found_error"
    plain = client.get("/no/such/page")
    assert plain.json()["error"]["code"] == "not_found"


def test_error_page_shows_the_nav_when_signed_in(client: TestClient) -> None:
    client.cookies.set(i18n.COOKIE, "en")
    sign_up(client)
    page = client.get("/no/such/page", headers=HTML).text
    assert text_of("en", "nav.sign_out") in page


# registration modes --------------------------------------------------------------------

MODES = [
    # name, mode, query, shows the form, shows the invite field, catalog key shown
    ("open", Registration.open, "", True, False, "signup.lead"),
    ("invite", Registration.invite, "", True, True, "signup.invite_note"),
    ("open with invite link", Registration.open, "?invite=abc", True, True, "signup.lead"),
    ("closed", Registration.closed, "", False, False, "signup.closed"),
    ("closed with invite link", Registration.closed, "?invite=abc", True, True, "signup.lead"),
]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
@pytest.mark.parametrize(
    ("name", "mode", "query", "form", "invite", "key"), MODES, ids=[m[0] for m in MODES]
)
def test_sign_up_page_follows_the_registration_mode(
    settings: Settings,
    db: Database,
    name: str,
    mode: Registration,
    query: str,
    form: bool,
    invite: bool,
    key: str,
    lang: str,
) -> None:
    with client_for(settings, db, registration=mode) as browser:
        browser.cookies.set(i18n.COOKIE, lang)
        page = browser.get("/signup" + query).text
    assert text_of(lang, key) in page
    assert ('action="/signup"' in page) is form
    assert ('name="invite"' in page) is invite
    if query:
        assert 'value="abc"' in page


SERVICE_REFUSALS = [
    # name, mode, catalog key
    ("invite needed", Registration.invite, "error.invite_required"),
    ("closed", Registration.closed, "error.registration_closed"),
]


@pytest.mark.parametrize(
    ("name", "mode", "key"), SERVICE_REFUSALS, ids=[r[0] for r in SERVICE_REFUSALS]
)
def test_sign_up_refusals_come_from_the_service(
    settings: Settings, db: Database, name: str, mode: Registration, key: str
) -> None:
    with client_for(settings, db, registration=mode) as browser:
        response = sign_up(browser)
    assert response.status_code == 403
    assert text_of("ja", key) in response.text
    assert count_users(db) == 0


def test_sign_in_page_hides_the_sign_up_link_when_closed(settings: Settings, db: Database) -> None:
    with client_for(settings, db, registration=Registration.closed) as browser:
        assert 'href="/signup"' not in browser.get("/signin").text
    with client_for(settings, db, registration=Registration.open) as browser:
        assert 'href="/signup"' in browser.get("/signin").text


def test_invite_sign_up_works_in_invite_mode(settings: Settings, db: Database) -> None:
    with db.session() as session:
        code = accounts.create_invite(session, created_by=None).code
    with client_for(settings, db, registration=Registration.invite) as browser:
        response = sign_up(browser, invite=code)
        assert response.status_code == 303
        assert text_of("ja", "dashboard.welcome", name="Aiko") in browser.get("/").text


@pytest.mark.parametrize("path", ["/signin", "/signup", "/no/such/page"])
def test_pages_send_security_headers(client: TestClient, path: str) -> None:
    response = client.get(path, headers=HTML)
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
