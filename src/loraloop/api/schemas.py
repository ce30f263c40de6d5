"""Request and response bodies, in ``Base -> Create/Update -> Public`` families.

Every request model forbids unknown fields and bounds every string and number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "InviteCreate",
    "InviteCreated",
    "JobCreate",
    "JobEventPublic",
    "JobPublic",
    "KeyCreate",
    "KeyCreated",
    "KeyPublic",
    "ProfileUpdate",
    "SessionPublic",
    "SignIn",
    "SignUp",
    "UserPublic",
]

Locale = Literal["ja", "en"]


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class Strict(BaseModel):
    """A request body: unknown fields and NUL characters (which no database text keeps) are
    refused."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text may not contain the NUL character (\\u0000); remove it")
        return data


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class SignIn(Strict):
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=256)


class SignUp(SignIn):
    display_name: str = Field(default="", max_length=80)
    invite: str | None = Field(default=None, max_length=128)
    locale: Locale = "ja"


class ProfileUpdate(Strict):
    display_name: str | None = Field(default=None, min_length=1, max_length=80)
    locale: Locale | None = None


class UserPublic(Public):
    id: int
    email: str
    display_name: str
    role: str
    locale: str
    created_at: datetime


class SessionPublic(BaseModel):
    user: UserPublic
    csrf_token: str = Field(description="Send as X-CSRF-Token on cookie-authenticated changes.")


class KeyCreate(Strict):
    name: str = Field(min_length=1, max_length=80)
    scopes: list[str] = Field(default_factory=lambda: ["inference:*"], min_length=1, max_length=50)
    rate_limit_per_minute: int = Field(default=60, ge=1, le=100_000)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)
    tokens_per_minute: int | None = Field(
        default=None, ge=1, le=10**9, description="Prompt + completion tokens per minute."
    )
    token_budget: int | None = Field(
        default=None, ge=1, le=10**15, description="Lifetime prompt + completion tokens."
    )


class KeyPublic(Public):
    id: int
    name: str
    prefix: str = Field(description="Shown so you can recognise the key; not a secret.")
    scopes: list[str]
    rate_limit_per_minute: int
    tokens_per_minute: int | None
    token_budget: int | None
    tokens_spent: int
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyPublic):
    secret: str = Field(description="The whole key. Shown once: it is stored only as a hash.")


class JobCreate(Strict):
    kind: str = Field(min_length=1, max_length=40)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-100, le=100)
    max_attempts: int = Field(default=3, ge=1, le=20)


class JobPublic(Public):
    id: int
    kind: str
    status: str
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    priority: int
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobEventPublic(Public):
    seq: int
    attempt: int
    at: datetime
    data: dict[str, Any]


class InviteCreate(Strict):
    role: Literal["admin", "member"] = "member"
    days: int = Field(default=7, ge=1, le=90)


class InviteCreated(BaseModel):
    code: str
    role: str
    expires_in_days: int
    signup_url: str
