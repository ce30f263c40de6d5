"""API keys: the secret is in the creation response only."""

from __future__ import annotations

from fastapi import APIRouter

from loraloop.api.deps import CurrentUser, DbSession
from loraloop.api.schemas import KeyCreate, KeyCreated, KeyPublic
from loraloop.db.tables import ApiKey
from loraloop.identity import api_keys

router = APIRouter(prefix="/api/keys", tags=["api keys"])


def _public(key: ApiKey) -> KeyPublic:
    return KeyPublic.model_validate(key)


@router.post("", status_code=201)
def create_key(body: KeyCreate, user: CurrentUser, session: DbSession) -> KeyCreated:
    """Issue a key. Copy ``secret`` now: it cannot be shown again."""
    issued = api_keys.create(
        session,
        user,
        name=body.name,
        scopes=body.scopes,
        rate_limit_per_minute=body.rate_limit_per_minute,
        expires_in_days=body.expires_in_days,
        tokens_per_minute=body.tokens_per_minute,
        token_budget=body.token_budget,
    )
    return KeyCreated(**_public(issued.key).model_dump(), secret=issued.secret)


@router.get("")
def list_keys(user: CurrentUser, session: DbSession) -> list[KeyPublic]:
    """Your keys, oldest first, without their secrets."""
    return [_public(k) for k in api_keys.list_own(session, user)]


@router.get("/{key_id}")
def get_key(key_id: int, user: CurrentUser, session: DbSession) -> KeyPublic:
    """One of your keys (404 for anyone else's)."""
    return _public(api_keys.get_own(session, user, key_id))


@router.delete("/{key_id}")
def revoke_key(key_id: int, user: CurrentUser, session: DbSession) -> KeyPublic:
    """Revoke a key at once; it stays listed, marked revoked."""
    return _public(api_keys.revoke(session, user, key_id))
