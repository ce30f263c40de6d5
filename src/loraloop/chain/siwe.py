"""Sign-In with Ethereum (EIP-4361) messages on ``eth-account``: build, parse, check.

The message a wallet signs with ``personal_sign`` (EIP-191)::

    {domain} wants you to sign in with your Ethereum account:
    {address, EIP-55}

    {statement}

    URI: {uri}
    Version: 1
    Chain ID: {chain id}
    Nonce: {nonce}
    Issued At: {RFC 3339}
    Expiration Time: {RFC 3339}        (optional)
    Not Before: {RFC 3339}             (optional)
    Request ID: {text}                 (optional)
    Resources:                         (optional)
    - {uri}

Parsing is strict (the fields in that order, nothing else), so a tampered text either fails
to parse or no longer matches its signature. This module knows nothing of users or nonces:
:mod:`loraloop.identity.wallets` holds those rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.address import is_checksum_address, to_checksum_address

__all__ = ["SiweError", "SiweMessage", "parse", "recover", "to_checksum_address"]

_HEADER = re.compile(r"^(?P<domain>[^\s]+) wants you to sign in with your Ethereum account:$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")
_FIELDS = (
    ("uri", "URI"),
    ("version", "Version"),
    ("chain_id", "Chain ID"),
    ("nonce", "Nonce"),
    ("issued_at", "Issued At"),
)
_OPTIONAL = (
    ("expiration_time", "Expiration Time"),
    ("not_before", "Not Before"),
    ("request_id", "Request ID"),
)


class SiweError(ValueError):
    """The message is malformed, or its signature is not the address's."""


def _time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{value.microsecond // 1000:03d}Z"
    )


def _parse_time(name: str, text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SiweError(f"{name} {text!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise SiweError(f"{name} {text!r} has no time zone")
    return parsed


@dataclass(frozen=True)
class SiweMessage:
    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: datetime
    statement: str | None = None
    version: str = "1"
    expiration_time: datetime | None = None
    not_before: datetime | None = None
    request_id: str | None = None
    resources: tuple[str, ...] = field(default_factory=tuple)

    def text(self) -> str:
        """The exact text to sign."""
        if not is_checksum_address(self.address):
            raise SiweError(f"address {self.address} is not EIP-55 checksummed")
        lines = [
            f"{self.domain} wants you to sign in with your Ethereum account:",
            self.address,
            "",
        ]
        if self.statement is not None:
            lines += [self.statement, ""]
        lines += [
            f"URI: {self.uri}",
            f"Version: {self.version}",
            f"Chain ID: {self.chain_id}",
            f"Nonce: {self.nonce}",
            f"Issued At: {_time(self.issued_at)}",
        ]
        if self.expiration_time is not None:
            lines.append(f"Expiration Time: {_time(self.expiration_time)}")
        if self.not_before is not None:
            lines.append(f"Not Before: {_time(self.not_before)}")
        if self.request_id is not None:
            lines.append(f"Request ID: {self.request_id}")
        if self.resources:
            lines += ["Resources:", *(f"- {r}" for r in self.resources)]
        return "\n".join(lines)


def parse(text: str) -> SiweMessage:
    """The message a text holds; SiweError naming the first thing wrong."""
    lines = text.split("\n")
    if len(lines) < 8:
        raise SiweError("this is not a Sign-In with Ethereum message (too few lines)")
    header = _HEADER.match(lines[0])
    if header is None:
        raise SiweError(
            "the first line must be '<domain> wants you to sign in with your Ethereum account:'"
        )
    address = lines[1]
    if not _ADDRESS.match(address):
        raise SiweError(f"line 2 must be an address, not {address!r}")
    if not is_checksum_address(address):
        raise SiweError(f"address {address} is not EIP-55 checksummed")
    if lines[2] != "":
        raise SiweError("line 3 must be empty")
    at = 3
    statement = None
    if not lines[at].startswith("URI: "):
        statement, at = lines[at], at + 1
        if "\n" in statement or lines[at] != "":
            raise SiweError("the statement is one line followed by an empty line")
        at += 1
    values: dict[str, str] = {}
    for key, label in _FIELDS:
        if at >= len(lines) or not lines[at].startswith(f"{label}: "):
            raise SiweError(f"line {at + 1} must be '{label}: ...'")
        values[key] = lines[at][len(label) + 2 :]
        at += 1
    for key, label in _OPTIONAL:
        if at < len(lines) and lines[at].startswith(f"{label}: "):
            values[key] = lines[at][len(label) + 2 :]
            at += 1
    resources: list[str] = []
    if at < len(lines) and lines[at] == "Resources:":
        at += 1
        while at < len(lines) and lines[at].startswith("- "):
            resources.append(lines[at][2:])
            at += 1
    if at != len(lines):
        raise SiweError(f"line {at + 1} is not part of a Sign-In with Ethereum message")
    if values["version"] != "1":
        raise SiweError(f"version {values['version']!r} is not 1")
    if not values["chain_id"].isdigit():
        raise SiweError(f"chain ID {values['chain_id']!r} is not a number")
    if not _NONCE.match(values["nonce"]):
        raise SiweError("the nonce must be at least 8 letters and digits")
    return SiweMessage(
        domain=header["domain"],
        address=address,
        statement=statement,
        uri=values["uri"],
        version=values["version"],
        chain_id=int(values["chain_id"]),
        nonce=values["nonce"],
        issued_at=_parse_time("Issued At", values["issued_at"]),
        expiration_time=_parse_time("Expiration Time", values["expiration_time"])
        if "expiration_time" in values
        else None,
        not_before=_parse_time("Not Before", values["not_before"])
        if "not_before" in values
        else None,
        request_id=values.get("request_id"),
        resources=tuple(resources),
    )


def recover(text: str, signature: str) -> str:
    """The checksummed address that signed ``text`` with ``personal_sign``."""
    try:
        signer = Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception as exc:  # eth-account raises several types for a malformed signature
        raise SiweError(f"the signature is not valid: {exc}") from exc
    return str(to_checksum_address(signer))
