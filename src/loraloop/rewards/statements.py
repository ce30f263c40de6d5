"""What the rewards page and ``GET /api/rewards`` show one user: every epoch they earned in,
its tokens and breakdown, where it is paid and whether it was claimed (read from the chain),
their balance on chain, and the points accruing in the open epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.engine import utcnow
from loraloop.db.tables import PointsEntry, RewardAllocation, RewardEpoch, RewardPayout, User
from loraloop.errors import NotFound
from loraloop.identity import wallets
from loraloop.rewards import epochs
from loraloop.rewards.onchain import RewardChain

__all__ = ["Line", "Statement", "payout_of", "statement"]


@dataclass
class Line:
    """One epoch's earnings."""

    epoch: int
    epoch_status: str
    closed_at: datetime | None
    amount: int
    millipoints: dict[str, int]
    breakdown: dict[str, Any]
    status: str
    """``waiting_for_wallet`` (kept until you link one), ``publishing`` (the tree is built,
    the root not yet on chain), ``claimable``, ``claimed``, or ``nothing`` (no tokens)."""
    paid_in: int | None = None
    """The epoch whose tree pays it (a later one if you had no wallet at the close)."""
    address: str | None = None
    payout_amount: int | None = None
    claim_tx: str | None = None


@dataclass
class Statement:
    address: str | None
    balance: int | None
    """Token balance of ``address`` on chain (smallest units)."""
    open_epoch: int
    closes_at: datetime
    accruing: dict[str, int]
    """Millipoints by kind earned since the last close."""
    lines: list[Line] = field(default_factory=list)
    chain: dict[str, Any] = field(default_factory=dict)


def statement(session: Session, settings: Settings, rewards: RewardChain, user: User) -> Statement:
    wallet = wallets.current(session, user)
    chain, contracts = rewards.connect(session)
    current = epochs.current(session, settings)
    accruing = {
        str(kind): int(total)
        for kind, total in session.execute(
            select(PointsEntry.kind, func.sum(PointsEntry.millipoints))
            .where(PointsEntry.user_id == user.id, PointsEntry.epoch_id.is_(None))
            .group_by(PointsEntry.kind)
        )
    }
    result = Statement(
        address=wallet.address if wallet else None,
        balance=rewards.balance(session, wallet.address) if wallet else None,
        open_epoch=current.id,
        closes_at=current.closes_at,
        accruing=accruing,
        chain={
            "chain_id": chain.chain_id,
            "token": contracts.token,
            "distributor": contracts.distributor,
            "embedded": rewards.embedded,
        },
    )
    rows = session.execute(
        select(RewardAllocation, RewardEpoch, RewardPayout)
        .join(RewardEpoch, RewardEpoch.id == RewardAllocation.epoch_id)
        .outerjoin(RewardPayout, RewardPayout.id == RewardAllocation.payout_id)
        .where(RewardAllocation.user_id == user.id)
        .order_by(RewardAllocation.epoch_id.desc())
    )
    checked: dict[int, bool] = {}
    for allocation, epoch, payout in rows:
        line = Line(
            epoch=epoch.id,
            epoch_status=epoch.status,
            closed_at=epoch.closed_at,
            amount=int(allocation.amount),
            millipoints={str(k): int(v) for k, v in allocation.millipoints.items()},
            breakdown=allocation.breakdown,
            status="nothing" if allocation.amount == "0" else "waiting_for_wallet",
        )
        if payout is not None:
            line.paid_in, line.address = payout.epoch_id, payout.address
            line.payout_amount, line.claim_tx = int(payout.amount), payout.claim_tx
            line.status = _payout_status(session, rewards, payout, checked)
        result.lines.append(line)
    return result


def _payout_status(
    session: Session, rewards: RewardChain, payout: RewardPayout, checked: dict[int, bool]
) -> str:
    paying = session.get(RewardEpoch, payout.epoch_id)
    if paying is None or paying.status != "published":
        return "publishing"
    if payout.claimed_at is None and payout.id not in checked:
        checked[payout.id] = rewards.is_claimed(session, payout)  # a self-claim from any wallet
        if checked[payout.id]:
            payout.claimed_at = utcnow()
    return "claimed" if payout.claimed_at is not None else "claimable"


def payout_of(session: Session, user: User, epoch_id: int) -> RewardPayout:
    """The user's leaf in an epoch's tree; 404 when they have none there."""
    found = session.scalar(
        select(RewardPayout).where(
            RewardPayout.epoch_id == epoch_id, RewardPayout.user_id == user.id
        )
    )
    if found is None:
        raise NotFound(f"you have no reward to claim in epoch {epoch_id}", code="payout_not_found")
    return found
