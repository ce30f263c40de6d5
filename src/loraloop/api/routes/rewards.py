"""Rewards: your tokens per epoch, claims (relayed: no gas for you; or the calldata for a
self-claim from any wallet), the public list of epochs, and closing an epoch (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from loraloop.api.deps import AdminUser, AppSettings, CurrentUser, DbSession
from loraloop.db.tables import RewardEpoch
from loraloop.rewards import epochs, statements
from loraloop.rewards.onchain import RewardChain

router = APIRouter(prefix="/api/rewards", tags=["rewards"])


def _rewards(request: Request) -> RewardChain:
    rewards: RewardChain = request.app.state.rewards
    return rewards


Rewards = Annotated[RewardChain, Depends(_rewards)]


class EpochPublic(BaseModel):
    epoch: int
    status: str
    """``open``, ``closed`` (tree built, root not yet on chain), ``published`` or ``empty``."""
    opened_at: datetime
    closes_at: datetime
    closed_at: datetime | None
    root: str | None
    total: str | None
    """Tokens paid by this epoch's tree, in the smallest unit (18 decimals), as a string."""
    leaves: int
    tx_hash: str | None
    rule: dict[str, Any] | None


class LinePublic(BaseModel):
    epoch: int
    epoch_status: str
    amount: str
    millipoints: dict[str, int]
    breakdown: dict[str, Any]
    status: str
    paid_in: int | None
    address: str | None
    payout_amount: str | None
    claim_tx: str | None


class RewardsState(BaseModel):
    address: str | None
    balance: str | None
    open_epoch: int
    closes_at: datetime
    accruing: dict[str, int]
    chain: dict[str, Any]
    epochs: list[LinePublic]


class Claimed(BaseModel):
    epoch: int
    index: int
    account: str
    amount: str
    tx_hash: str


class Calldata(BaseModel):
    chain_id: int
    to: str
    data: str
    epoch: int
    index: int
    account: str
    amount: str
    proof: list[str]


def _epoch(row: RewardEpoch) -> EpochPublic:
    return EpochPublic(
        epoch=row.id,
        status=row.status,
        opened_at=row.opened_at,
        closes_at=row.closes_at,
        closed_at=row.closed_at,
        root=row.root,
        total=row.total,
        leaves=row.leaves,
        tx_hash=row.tx_hash,
        rule=row.rule,
    )


@router.get("")
def mine(
    user: CurrentUser, session: DbSession, settings: AppSettings, rewards: Rewards
) -> RewardsState:
    """Your tokens per epoch with their breakdown and status, and your balance on chain."""
    found = statements.statement(session, settings, rewards, user)
    return RewardsState(
        address=found.address,
        balance=None if found.balance is None else str(found.balance),
        open_epoch=found.open_epoch,
        closes_at=found.closes_at,
        accruing=found.accruing,
        chain=found.chain,
        epochs=[
            LinePublic(
                epoch=line.epoch,
                epoch_status=line.epoch_status,
                amount=str(line.amount),
                millipoints=line.millipoints,
                breakdown=line.breakdown,
                status=line.status,
                paid_in=line.paid_in,
                address=line.address,
                payout_amount=None if line.payout_amount is None else str(line.payout_amount),
                claim_tx=line.claim_tx,
            )
            for line in found.lines
        ],
    )


@router.get("/epochs")
def list_epochs(_user: CurrentUser, session: DbSession, settings: AppSettings) -> list[EpochPublic]:
    """Every epoch, newest first: its root, total and the rule it closed under."""
    epochs.current(session, settings)
    rows = session.query(RewardEpoch).order_by(RewardEpoch.id.desc()).limit(200)
    return [_epoch(row) for row in rows]


@router.post("/epochs/{epoch_id}/close")
def close_epoch(
    epoch_id: int, _admin: AdminUser, session: DbSession, rewards: Rewards
) -> EpochPublic:
    """Close an open epoch now and publish its root (admins; epochs also close on their own
    schedule). Closing an epoch that is closed already changes nothing and returns it."""
    return _epoch(rewards.close_now(session, epoch_id))


@router.post("/epochs/{epoch_id}/claim")
def claim(epoch_id: int, user: CurrentUser, session: DbSession, rewards: Rewards) -> Claimed:
    """Claim your tokens from an epoch's tree; the platform sends the transaction."""
    payout = rewards.claim(session, statements.payout_of(session, user, epoch_id))
    assert payout.claim_tx is not None
    return Claimed(
        epoch=payout.epoch_id,
        index=payout.leaf_index,
        account=payout.address,
        amount=payout.amount,
        tx_hash=payout.claim_tx,
    )


@router.get("/epochs/{epoch_id}/calldata")
def calldata(epoch_id: int, user: CurrentUser, session: DbSession, rewards: Rewards) -> Calldata:
    """The transaction for claiming from your own wallet: send ``data`` to ``to``."""
    return Calldata(**rewards.calldata(session, statements.payout_of(session, user, epoch_id)))
