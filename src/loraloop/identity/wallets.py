"""Linking a payout wallet with Sign-In with Ethereum (EIP-4361).

1. The account asks for a nonce: single use, bound to it, valid ``NONCE_MINUTES``; with an
   address the server also writes the message to sign (domain, URI, chain, times filled in).
2. The wallet signs the message (``personal_sign``); the account sends message and signature.
3. The server parses the text strictly and checks, in order: the domain and URI are this
   server's, the chain is ``chain_id``, the nonce is this account's, unused and unexpired,
   the message is inside its issued-at / not-before / expiration window, and the signature
   recovers to the address in the text. Only then is the nonce spent and the address linked.

One payout address per account (linking another replaces it, again only with a fresh
signature); an address is linked to one account at a time. Unlinked rows stay, so reviewer
draws can still tell two accounts that once shared a wallet.
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.chain import siwe
from loraloop.config import Settings
from loraloop.db.engine import utcnow
from loraloop.db.tables import SiweNonce, User, WalletLink
from loraloop.errors import Conflict, InvalidRequest

__all__ = ["NONCE_MINUTES", "Challenge", "current", "history", "issue", "link"]

NONCE_MINUTES = 10
SKEW = timedelta(minutes=2)
"""Clock difference between wallet and server that is forgiven on issued-at / not-before."""
_ALPHABET = string.ascii_letters + string.digits


class Challenge:
    def __init__(self, nonce: str, expires_at: datetime, message: str | None) -> None:
        self.nonce, self.expires_at, self.message = nonce, expires_at, message


def _origin(settings: Settings, request_base: str) -> tuple[str, str]:
    """(domain, uri) the messages must name."""
    base = settings.public_url or request_base
    parts = urlsplit(base)
    return parts.netloc, f"{parts.scheme}://{parts.netloc}"


def issue(
    session: Session,
    settings: Settings,
    user: User,
    *,
    request_base: str,
    address: str | None = None,
) -> Challenge:
    """A fresh nonce (and, given the address, the exact message to sign)."""
    nonce = "".join(secrets.choice(_ALPHABET) for _ in range(24))
    now = utcnow()
    expires = now + timedelta(minutes=NONCE_MINUTES)
    session.add(SiweNonce(user_id=user.id, nonce=nonce, expires_at=expires))
    session.flush()
    message = None
    if address is not None:
        try:
            checksummed = siwe.to_checksum_address(address)
        except ValueError as exc:
            raise InvalidRequest(
                f"{address!r} is not an Ethereum address", param="address"
            ) from exc
        domain, uri = _origin(settings, request_base)
        message = siwe.SiweMessage(
            domain=domain,
            address=checksummed,
            statement="Link this wallet to my loraloop account to receive rewards.",
            uri=uri,
            chain_id=settings.chain_id,
            nonce=nonce,
            issued_at=now,
            expiration_time=expires,
        ).text()
    return Challenge(nonce, expires, message)


def link(
    session: Session,
    settings: Settings,
    user: User,
    *,
    message: str,
    signature: str,
    request_base: str,
) -> WalletLink:
    """Check a signed message and link its address as the account's payout address."""
    try:
        parsed = siwe.parse(message)
    except siwe.SiweError as exc:
        raise InvalidRequest(str(exc), code="siwe_malformed", param="message") from exc
    domain, uri = _origin(settings, request_base)
    now = utcnow()
    if parsed.domain != domain:
        raise InvalidRequest(
            f"the message is for {parsed.domain}, not {domain}", code="siwe_domain"
        )
    if urlsplit(parsed.uri).netloc != urlsplit(uri).netloc:
        raise InvalidRequest(f"the message's URI {parsed.uri} is not {uri}", code="siwe_uri")
    if parsed.chain_id != settings.chain_id:
        raise InvalidRequest(
            f"the message is for chain {parsed.chain_id}; rewards are paid on chain "
            f"{settings.chain_id}",
            code="siwe_chain",
        )
    row = session.scalar(select(SiweNonce).where(SiweNonce.nonce == parsed.nonce).with_for_update())
    if row is None or row.user_id != user.id:
        raise InvalidRequest(
            "the nonce was not issued to you; ask for a new one", code="siwe_nonce"
        )
    if row.used_at is not None:
        raise InvalidRequest(
            "this nonce was used already; ask for a new one", code="siwe_nonce_used"
        )
    if row.expires_at <= now:
        raise InvalidRequest("the nonce expired; ask for a new one", code="siwe_nonce_expired")
    if parsed.issued_at > now + SKEW:
        raise InvalidRequest("the message is issued in the future", code="siwe_time")
    if parsed.expiration_time is not None and parsed.expiration_time <= now:
        raise InvalidRequest("the message expired; sign a new one", code="siwe_expired")
    if parsed.not_before is not None and parsed.not_before > now + SKEW:
        raise InvalidRequest("the message is not valid yet (Not Before)", code="siwe_time")
    try:
        signer = siwe.recover(message, signature)
    except siwe.SiweError as exc:
        raise InvalidRequest(str(exc), code="siwe_signature", param="signature") from exc
    if signer != parsed.address:
        raise InvalidRequest(
            f"the signature is {signer}'s, not {parsed.address}'s", code="siwe_signature"
        )
    row.used_at = now
    address = parsed.address.lower()
    taken = session.scalar(
        select(WalletLink).where(
            WalletLink.address == address,
            WalletLink.unlinked_at.is_(None),
            WalletLink.user_id != user.id,
        )
    )
    if taken is not None:
        raise Conflict(
            f"{parsed.address} is the payout address of another account", code="wallet_taken"
        )
    mine = current(session, user)
    if mine is not None and mine.address == address:
        return mine
    if mine is not None:
        mine.unlinked_at = now
    linked = WalletLink(user_id=user.id, address=address, linked_at=now)
    session.add(linked)
    session.flush()
    return linked


def current(session: Session, user: User) -> WalletLink | None:
    return session.scalar(
        select(WalletLink).where(WalletLink.user_id == user.id, WalletLink.unlinked_at.is_(None))
    )


def history(session: Session, user: User) -> list[WalletLink]:
    query = select(WalletLink).where(WalletLink.user_id == user.id)
    return list(session.scalars(query.order_by(WalletLink.id.desc())))
