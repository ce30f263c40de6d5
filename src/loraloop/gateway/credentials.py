"""Upstream credentials at rest: Fernet (AES-128-CBC + HMAC) under a key derived from the
server secret with HKDF, so a database dump alone reveals no upstream API key."""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from loraloop.errors import ConfigurationError

__all__ = ["Vault"]


class Vault:
    """Encrypts and decrypts short secrets with a key derived from ``server_secret``."""

    def __init__(self, server_secret: str) -> None:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"loraloop upstream credentials"
        ).derive(server_secret.encode())
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def __repr__(self) -> str:
        return "Vault([secure])"

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise ConfigurationError(
                "a stored upstream credential cannot be decrypted: the server secret changed; "
                "set the deployment's upstream key again"
            ) from None
