"""API keys: ``ll_<public id>_<secret>``. The secret (256 bits) is shown once and stored only
as its SHA-256; the ``ll_<public id>`` prefix is shown in lists so people recognise a key.

Scopes: ``inference:*`` (every deployment of the owner), ``inference:<deployment>``,
``manage`` (the REST API, acting as the owner), ``worker`` (the job protocol under
``/api/worker``; only an admin's key may carry it until provider accounts exist).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import ApiKey, User
from loraloop.errors import InvalidRequest, NotFound, PermissionDenied, RateLimited, Unauthenticated
from loraloop.identity.tokens import digest, new_secret, same

__all__ = [
    "DEFAULT_SCOPES",
    "IssuedKey",
    "authenticate",
    "create",
    "get_own",
    "list_own",
    "revoke",
    "validate_scopes",
]

PREFIX = "ll"
DEFAULT_SCOPES = ("inference:*",)
_PUBLIC_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
_SCOPE = re.compile(r"^(manage|worker|provider|inference:\*|inference:[a-z0-9][a-z0-9._-]{0,63})$")
_WINDOW = 60

# Built once: authentication runs on every API request, so neither statement is rebuilt per call.
_LOOKUP = (
    select(ApiKey, User)
    .join(User, User.id == ApiKey.user_id)
    .where(ApiKey.public_id == bindparam("public_id"))
)
_SPEND = (
    update(ApiKey)
    .where(
        ApiKey.id == bindparam("key_id"),
        (ApiKey.window_start != bindparam("window"))
        | (ApiKey.window_count < ApiKey.rate_limit_per_minute),
    )
    .values(
        window_count=case(
            (ApiKey.window_start == bindparam("window"), ApiKey.window_count + 1), else_=1
        ),
        window_start=bindparam("window"),
        last_used_at=bindparam("now"),
    )
)


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str

    def __repr__(self) -> str:  # the secret never shows up in logs or tracebacks
        return f"IssuedKey(key_id={self.key.id}, prefix={self.key.prefix!r}, secret=[secure])"


def validate_scopes(scopes: list[str]) -> list[str]:
    bad = [s for s in scopes if not _SCOPE.match(s)]
    if bad or not scopes:
        raise InvalidRequest(
            f"unknown scopes {bad or '[]'}; use 'inference:*', 'inference:<deployment>', "
            "'manage', 'worker' (admins: a trusted worker) or 'provider' (lend a machine)",
            param="scopes",
        )
    return sorted(set(scopes))


def create(
    session: Session,
    user: User,
    *,
    name: str,
    scopes: list[str] | None = None,
    rate_limit_per_minute: int = 60,
    expires_in_days: int | None = None,
    tokens_per_minute: int | None = None,
    token_budget: int | None = None,
) -> IssuedKey:
    problems = []
    if tokens_per_minute is not None and not 1 <= tokens_per_minute <= 10**9:
        problems.append(f"tokens_per_minute {tokens_per_minute} must be 1 to 1000000000")
    if token_budget is not None and not 1 <= token_budget <= 10**15:
        problems.append(f"token_budget {token_budget} must be 1 to 10^15 tokens")
    if not 1 <= len(name.strip()) <= 80:
        problems.append("name must be 1 to 80 characters")
    if not 1 <= rate_limit_per_minute <= 100_000:
        problems.append(f"rate_limit_per_minute {rate_limit_per_minute} must be 1 to 100000")
    if expires_in_days is not None and not 1 <= expires_in_days <= 3650:
        problems.append(f"expires_in_days {expires_in_days} must be 1 to 3650")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_api_key")
    scopes = validate_scopes(list(scopes or DEFAULT_SCOPES))
    if "provider" in scopes and len(scopes) > 1:
        raise InvalidRequest(
            "a provider key has the 'provider' scope only: it reaches the worker API and "
            "nothing else",
            param="scopes",
        )
    if "worker" in scopes and user.role != "admin":
        raise PermissionDenied(
            "only admins may create keys with the 'worker' scope", code="admin_only_scope"
        )
    public_id = "".join(secrets.choice(_PUBLIC_ALPHABET) for _ in range(10))
    secret = f"{PREFIX}_{public_id}_{new_secret(32)}"
    key = ApiKey(
        user_id=user.id,
        name=name.strip(),
        public_id=public_id,
        secret_hash=digest(secret),
        scopes=scopes,
        rate_limit_per_minute=rate_limit_per_minute,
        window_start=0,
        window_count=0,
        expires_at=utcnow() + timedelta(days=expires_in_days) if expires_in_days else None,
        tokens_per_minute=tokens_per_minute,
        token_budget=token_budget,
        tpm_window_start=0,
        tpm_window_tokens=0,
        tokens_spent=0,
        tokens_reserved=0,
    )
    session.add(key)
    session.flush()
    return IssuedKey(key=key, secret=secret)


def list_own(session: Session, user: User) -> list[ApiKey]:
    return list(
        session.scalars(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.id))
    )


def get_own(session: Session, user: User, key_id: int) -> ApiKey:
    key = session.get(ApiKey, key_id)
    if key is None or key.user_id != user.id:
        raise NotFound(f"API key {key_id} not found", param="key_id")
    return key


def revoke(session: Session, user: User, key_id: int) -> ApiKey:
    key = get_own(session, user, key_id)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def count_active(session: Session, user: User) -> int:
    now = utcnow()
    return sum(1 for key in list_own(session, user) if is_active(key, now))


def is_active(key: ApiKey, now: datetime) -> bool:
    return key.revoked_at is None and (key.expires_at is None or key.expires_at > now)


def _parse(secret: str) -> str | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def authenticate(db: Database, secret: str, *, scope: str) -> tuple[User, ApiKey]:
    """The owner and key behind a bearer secret, after expiry, scope and rate-limit checks.

    Runs in its own transaction so a request counts against the key's limit even when the
    request itself is then refused."""
    public_id = _parse(secret)
    with db.session() as session:
        found = session.execute(_LOOKUP, {"public_id": public_id}).first() if public_id else None
        key, user = found if found is not None else (None, None)
        now = utcnow()
        if key is None or not same(key.secret_hash, digest(secret)) or not is_active(key, now):
            raise Unauthenticated(
                "Incorrect, revoked or expired API key. Create a new key on the API keys page.",
                code="invalid_api_key",
            )
        if not has_scope(key, scope):
            wanted = {
                "inference": "inference:*' or 'inference:<deployment>",
                "worker_api": "provider' or 'worker",
            }.get(scope, scope)
            raise Unauthenticated(
                f"this API key lacks the scope '{wanted}'; create a key that has it",
                code="insufficient_scope",
            )
        _spend(session, key, now)
    if user is None or not user.is_active:
        raise Unauthenticated("the account that owns this API key is disabled")
    return user, key


def has_scope(key: ApiKey, scope: str) -> bool:
    """``scope="inference"`` asks whether the key may call any deployment at all;
    ``scope="worker_api"`` whether it may act as a worker (``worker``) or provider node."""
    if scope in key.scopes:
        return True
    if scope == "worker_api":
        return "worker" in key.scopes or "provider" in key.scopes
    if scope == "inference":
        return any(s.startswith("inference:") for s in key.scopes)
    return scope.startswith("inference:") and "inference:*" in key.scopes


def _spend(session: Session, key: ApiKey, now: datetime) -> None:
    """Count one request in the key's fixed one-minute window, atomically across replicas."""
    window = int(time.time()) // _WINDOW
    # Core execution on the session's connection: the ORM's bulk-update bookkeeping is not needed.
    spent = session.connection().execute(_SPEND, {"key_id": key.id, "window": window, "now": now})
    if spent.rowcount != 1:
        retry = _WINDOW - int(time.time()) % _WINDOW
        raise RateLimited(
            f"rate limit of {key.rate_limit_per_minute} requests per minute reached for key "
            f"{key.prefix}; retry in {retry} s",
            retry_after=retry,
        )
    set_committed_value(key, "last_used_at", now)
