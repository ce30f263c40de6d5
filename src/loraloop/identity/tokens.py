"""Random secrets and their stored form (SHA-256: the secrets are already 256-bit random)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["digest", "new_secret", "same"]


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
