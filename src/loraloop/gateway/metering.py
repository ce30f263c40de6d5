"""Token limits and usage: reserve before generating, settle after, whatever happened.

    reserve(prompt + max_tokens) ──one guarded UPDATE──▶ refused (429) or held
    ...generation (finished, failed or abandoned by the client)...
    settle(held, used) ──▶ key: reserved -= held, spent += used; a usage row; the day's totals

The reservation is a single ``UPDATE ... WHERE spent + reserved + n <= budget``, so concurrent
requests on any number of replicas can never overshoot a budget: what they may still use is
held until they settle, and a request settles at most what it reserved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, case, delete, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from loraloop.db.engine import Database, rowcount, utcnow
from loraloop.db.tables import ApiKey, Trace, UsageDaily, UsageEvent
from loraloop.errors import RateLimited

__all__ = ["Reservation", "is_limited", "prune", "record_usage", "reserve", "settle"]

_WINDOW = 60


@dataclass(frozen=True)
class Reservation:
    key_id: int | None
    tokens: int
    window: int
    held: bool = True
    """False for a key without token limits: nothing was held, so settling only charges."""


# Built once: every request runs them, so none is rebuilt (and re-keyed for the cache) per call.
_IN_WINDOW = case(
    (ApiKey.tpm_window_start == bindparam("window"), ApiKey.tpm_window_tokens), else_=0
)
_HOLD = (
    update(ApiKey)
    .where(
        ApiKey.id == bindparam("key_id"),
        (ApiKey.token_budget.is_(None))
        | (
            ApiKey.tokens_spent + ApiKey.tokens_reserved + bindparam("tokens")
            <= ApiKey.token_budget
        ),
        (ApiKey.tokens_per_minute.is_(None))
        | (_IN_WINDOW + bindparam("tokens") <= ApiKey.tokens_per_minute),
    )
    .values(
        tokens_reserved=ApiKey.tokens_reserved + bindparam("tokens"),
        tpm_window_tokens=_IN_WINDOW + bindparam("tokens"),
        tpm_window_start=bindparam("window"),
    )
)
_SETTLE = (
    update(ApiKey)
    .where(ApiKey.id == bindparam("key_id"))
    .values(
        tokens_reserved=ApiKey.tokens_reserved - bindparam("held"),
        tokens_spent=ApiKey.tokens_spent + bindparam("used"),
        tpm_window_tokens=case(
            (
                ApiKey.tpm_window_start == bindparam("window"),
                ApiKey.tpm_window_tokens - bindparam("unused"),
            ),
            else_=ApiKey.tpm_window_tokens,
        ),
    )
)
_CHARGE = (
    update(ApiKey)
    .where(ApiKey.id == bindparam("key_id"))
    .values(tokens_spent=ApiKey.tokens_spent + bindparam("used"))
)
_EVENT = insert(UsageEvent)


def _add_to_day(statement: postgresql.Insert | sqlite.Insert) -> postgresql.Insert | sqlite.Insert:
    return statement.on_conflict_do_update(
        index_elements=["day", "owner_id", "key_id", "deployment_id"],
        set_={
            "requests": UsageDaily.requests + statement.excluded.requests,
            "prompt_tokens": UsageDaily.prompt_tokens + statement.excluded.prompt_tokens,
            "completion_tokens": UsageDaily.completion_tokens
            + statement.excluded.completion_tokens,
        },
    )


_ADD_TO_DAY = {
    "postgresql": _add_to_day(postgresql.insert(UsageDaily)),
    "sqlite": _add_to_day(sqlite.insert(UsageDaily)),
}


def is_limited(key: ApiKey | None) -> bool:
    """Whether :func:`reserve` must hold tokens in the database for this key."""
    return key is not None and (key.token_budget is not None or key.tokens_per_minute is not None)


def reserve(db: Database, key: ApiKey | None, tokens: int) -> Reservation:
    """Hold ``tokens`` against the key's budget and tokens-per-minute limit, or raise 429."""
    window = int(time.time()) // _WINDOW
    if key is None or not is_limited(key):
        return Reservation(key.id if key else None, tokens, window, held=False)
    with db.session() as session:
        held = session.connection().execute(
            _HOLD, {"key_id": key.id, "tokens": tokens, "window": window}
        )
        if held.rowcount == 1:
            return Reservation(key.id, tokens, window)
        fresh = session.get(ApiKey, key.id)
    _refuse(fresh or key, tokens, window)
    raise AssertionError("unreachable")


def _refuse(key: ApiKey, tokens: int, window: int) -> None:
    if key.token_budget is not None and (
        key.tokens_spent + key.tokens_reserved + tokens > key.token_budget
    ):
        left = max(0, key.token_budget - key.tokens_spent - key.tokens_reserved)
        raise RateLimited(
            f"key {key.prefix} has {left} of its {key.token_budget} budget tokens left and this "
            f"request may use {tokens} (prompt + max_tokens); lower max_tokens or raise the "
            "key's token budget",
            retry_after=_WINDOW,
            code="insufficient_quota",
        )
    retry = _WINDOW - int(time.time()) % _WINDOW
    raise RateLimited(
        f"key {key.prefix} reached its limit of {key.tokens_per_minute} tokens per minute "
        f"(this request may use {tokens}); retry in {retry} s or lower max_tokens",
        retry_after=retry,
        code="tokens_per_minute_exceeded",
    )


def settle(session: Session, reservation: Reservation, used: int) -> None:
    """Release the hold and charge what was really used (never more than was held)."""
    if reservation.key_id is None:
        return
    used = min(used, reservation.tokens)
    charge = {"key_id": reservation.key_id, "used": used}
    if not reservation.held:
        session.connection().execute(_CHARGE, charge)
        return
    session.connection().execute(
        _SETTLE,
        {
            **charge,
            "held": reservation.tokens,
            "unused": reservation.tokens - used,
            "window": reservation.window,
        },
    )


def record_usage(
    session: Session,
    *,
    owner_id: int,
    key_id: int | None,
    deployment_id: int | None,
    prompt_tokens: int,
    completion_tokens: int,
    status: str,
) -> None:
    """One compact row and the day's running totals (an upsert)."""
    now = utcnow()
    connection = session.connection()
    connection.execute(
        _EVENT,
        {
            "owner_id": owner_id,
            "key_id": key_id,
            "deployment_id": deployment_id,
            "at": now,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "status": status,
        },
    )
    connection.execute(
        _ADD_TO_DAY[connection.dialect.name],
        {
            "day": now.date().isoformat(),
            "owner_id": owner_id,
            "key_id": key_id or 0,
            "deployment_id": deployment_id or 0,
            "requests": 1,
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
        },
    )


def prune(
    session: Session, *, trace_days: int, usage_days: int, now: datetime | None = None
) -> int:
    """Drop traces and usage rows past their retention; daily totals stay. Returns rows gone."""
    now = now or utcnow()
    gone = rowcount(
        session.execute(delete(Trace).where(Trace.created_at < now - timedelta(days=trace_days)))
    )
    gone += rowcount(
        session.execute(delete(UsageEvent).where(UsageEvent.at < now - timedelta(days=usage_days)))
    )
    return gone
