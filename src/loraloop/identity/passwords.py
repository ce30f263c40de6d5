"""Password hashing with argon2id (argon2-cffi's RFC 9106 low-memory profile)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hash_password", "needs_rehash", "verify_password", "verify_unknown_user"]

_hasher = PasswordHasher()
# Verified against when the account does not exist, so both paths cost one argon2 run.
_DUMMY_HASH = _hasher.hash("loraloop-dummy-password-for-timing")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_unknown_user(password: str) -> bool:
    """Spend the same time as a real check; always False."""
    verify_password(_DUMMY_HASH, password)
    return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)
