"""Your payout wallet, linked with Sign-In with Ethereum (EIP-4361): ask for a nonce (and the
message to sign), sign it in your wallet (``personal_sign``), send message and signature."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from loraloop.api.deps import AppSettings, CurrentUser, DbSession
from loraloop.api.schemas import Strict
from loraloop.identity import wallets

router = APIRouter(prefix="/api/wallet", tags=["wallet"])


class NonceRequest(Strict):
    address: str | None = Field(
        default=None, max_length=42, description="With it, the server writes the message."
    )


class NonceIssued(BaseModel):
    nonce: str
    expires_at: datetime
    message: str | None


class LinkRequest(Strict):
    message: str = Field(min_length=1, max_length=4000)
    signature: str = Field(min_length=1, max_length=200)


class WalletPublic(BaseModel):
    address: str
    linked_at: datetime
    unlinked_at: datetime | None


class WalletState(BaseModel):
    address: str | None
    """The payout address now (lower-case hex), or None."""
    history: list[WalletPublic]


def _base(request: Request) -> str:
    return str(request.base_url)


@router.post("/nonce", status_code=201)
def nonce(
    body: NonceRequest,
    request: Request,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> NonceIssued:
    """A single-use nonce valid for 10 minutes; with ``address``, the exact message to sign."""
    challenge = wallets.issue(
        session, settings, user, request_base=_base(request), address=body.address
    )
    return NonceIssued(
        nonce=challenge.nonce, expires_at=challenge.expires_at, message=challenge.message
    )


@router.post("/link")
def link(
    body: LinkRequest,
    request: Request,
    user: CurrentUser,
    session: DbSession,
    settings: AppSettings,
) -> WalletPublic:
    """Link the signed message's address as your payout address (replacing the previous)."""
    row = wallets.link(
        session,
        settings,
        user,
        message=body.message,
        signature=body.signature,
        request_base=_base(request),
    )
    return WalletPublic(address=row.address, linked_at=row.linked_at, unlinked_at=None)


@router.get("")
def state(user: CurrentUser, session: DbSession) -> WalletState:
    """Your payout address and every address you linked before."""
    now = wallets.current(session, user)
    return WalletState(
        address=now.address if now else None,
        history=[
            WalletPublic(address=w.address, linked_at=w.linked_at, unlinked_at=w.unlinked_at)
            for w in wallets.history(session, user)
        ],
    )
