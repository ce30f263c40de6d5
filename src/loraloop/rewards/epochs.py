"""Epochs: the points ledger turned into token amounts, a Merkle tree and its proofs.

The published rule (:func:`allocate`), per epoch:

- the pool is ``reward_pool`` whole tokens; ``reward_compute_share`` of it goes to verified
  compute (ledger kind ``compute``), the rest to the community (``contribution``, ``review``,
  ``impact``);
- within a side, each user gets ``side pool × their points / all points on that side``,
  rounded down to the token's smallest unit (the dust is not minted); a user's negative total
  on a side counts as zero; a side nobody earned points on is not minted.

Closing (:func:`close`) happens in one database transaction: the open epoch is claimed by a
compare-and-set on its status (a second closer finds it closed and returns it), every ledger
entry not yet in an epoch and written before the close joins it, each user's allocation is
written, and every user with a linked wallet gets one leaf for everything they are owed (this
epoch's tokens plus earlier ones kept while they had no wallet). The next epoch opens in the
same transaction. Publishing the root is :mod:`loraloop.rewards.onchain`'s part.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from eth_utils.address import to_checksum_address
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from loraloop.chain import merkle
from loraloop.config import Settings
from loraloop.db.engine import utcnow
from loraloop.db.tables import (
    PointsEntry,
    RewardAllocation,
    RewardEpoch,
    RewardPayout,
    WalletLink,
)
from loraloop.errors import NotFound
from loraloop.providers import earnings

__all__ = [
    "COMMUNITY_KINDS",
    "COMPUTE_KINDS",
    "UNIT",
    "Share",
    "allocate",
    "close",
    "current",
    "due",
    "get",
]

UNIT = 10**18
"""Smallest units per whole token (18 decimals)."""
COMPUTE_KINDS = frozenset({earnings.KIND})
COMMUNITY_KINDS = frozenset({"contribution", "review", "impact"})


@dataclass(frozen=True)
class Share:
    """One user's tokens from one side of the pool, with the numbers that gave them."""

    side: str
    points: int
    """The user's millipoints on this side."""
    side_points: int
    side_pool: int
    amount: int


def side_of(kind: str) -> str:
    return "compute" if kind in COMPUTE_KINDS else "community"


def allocate(
    points: dict[int, dict[str, int]], *, pool: int, compute_share: float
) -> dict[int, list[Share]]:
    """The published rule: ``points`` is millipoints by user and ledger kind; the result is
    each user's shares (amounts in the smallest unit). Pure, so the rule can be tested and
    recomputed by anyone from the published ledger."""
    compute_pool = int(
        (Decimal(pool) * Decimal(str(compute_share))).to_integral_value(rounding=ROUND_DOWN)
    )
    pools = {"compute": compute_pool, "community": pool - compute_pool}
    by_side: dict[str, dict[int, int]] = {"compute": {}, "community": {}}
    for user_id, kinds in points.items():
        for kind, millipoints in kinds.items():
            tally = by_side[side_of(kind)]
            tally[user_id] = tally.get(user_id, 0) + millipoints
    shares: dict[int, list[Share]] = defaultdict(list)
    for side, users in by_side.items():
        positive = {user: p for user, p in users.items() if p > 0}
        side_total = sum(positive.values())
        if side_total == 0:
            continue
        for user_id, p in sorted(positive.items()):
            amount = pools[side] * p // side_total
            shares[user_id].append(Share(side, p, side_total, pools[side], amount))
    return dict(shares)


def current(session: Session, settings: Settings, *, now: datetime | None = None) -> RewardEpoch:
    """The open epoch (the first one is opened on first use)."""
    found = session.scalar(
        select(RewardEpoch).where(RewardEpoch.status == "open").order_by(RewardEpoch.id.desc())
    )
    if found is not None:
        return found
    now = now or utcnow()
    last = session.scalar(select(func.max(RewardEpoch.id))) or 0
    opened = RewardEpoch(
        id=last + 1,
        status="open",
        opened_at=now,
        closes_at=now + timedelta(days=settings.reward_epoch_days),
    )
    session.add(opened)
    session.flush()
    return opened


def get(session: Session, epoch_id: int) -> RewardEpoch:
    found = session.get(RewardEpoch, epoch_id)
    if found is None:
        raise NotFound(f"epoch {epoch_id} does not exist", code="epoch_not_found")
    return found


def due(session: Session, settings: Settings, *, now: datetime | None = None) -> bool:
    """Whether the open epoch's time is up."""
    return current(session, settings, now=now).closes_at <= (now or utcnow())


def close(
    session: Session,
    settings: Settings,
    *,
    epoch_id: int | None = None,
    now: datetime | None = None,
) -> RewardEpoch:
    """Close the open epoch, or epoch ``epoch_id`` if it is still open (see the module
    docstring); returns it, now ``closed`` (a tree to publish) or ``empty``. Naming the epoch
    makes a repeated request a no-op rather than the close of the next epoch; either way it
    is safe from two processes at once."""
    now = now or utcnow()
    epoch = current(session, settings, now=now)  # the first epoch exists from first use
    if epoch_id is not None and epoch_id != epoch.id:
        epoch = get(session, epoch_id)
    if epoch.status != "open":
        return epoch
    claimed = session.execute(
        update(RewardEpoch)
        .where(RewardEpoch.id == epoch.id, RewardEpoch.status == "open")
        .values(status="closing")
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]  # another closer won
        session.refresh(epoch)
        return epoch
    session.execute(
        update(PointsEntry)
        .where(PointsEntry.epoch_id.is_(None), PointsEntry.created_at <= now)
        .values(epoch_id=epoch.id)
        .execution_options(synchronize_session=False)
    )
    points: dict[int, dict[str, int]] = defaultdict(dict)
    rows = session.execute(
        select(PointsEntry.user_id, PointsEntry.kind, func.sum(PointsEntry.millipoints))
        .where(PointsEntry.epoch_id == epoch.id)
        .group_by(PointsEntry.user_id, PointsEntry.kind)
    )
    for user_id, kind, total in rows:
        points[int(user_id)][str(kind)] = int(total)
    pool = settings.reward_pool * UNIT
    shares = allocate(points, pool=pool, compute_share=settings.reward_compute_share)
    for user_id, kinds in sorted(points.items()):
        mine = shares.get(user_id, [])
        session.add(
            RewardAllocation(
                epoch_id=epoch.id,
                user_id=user_id,
                millipoints=kinds,
                amount=str(sum(s.amount for s in mine)),
                breakdown={
                    s.side: {
                        "points": s.points,
                        "side_points": s.side_points,
                        "side_pool": str(s.side_pool),
                        "amount": str(s.amount),
                    }
                    for s in mine
                },
            )
        )
    session.flush()
    leaves = _payouts(session, epoch)
    side_points: dict[str, int] = defaultdict(int)
    for kinds in points.values():
        for kind, p in kinds.items():
            side_points[side_of(kind)] += max(p, 0)
    epoch.rule = {
        "pool": str(pool),
        "compute_share": settings.reward_compute_share,
        "side_points": dict(side_points),
        "formula": "side pool × your points ÷ all points on the side, rounded down",
    }
    epoch.closed_at = now
    epoch.leaves = len(leaves)
    if leaves:
        tree = merkle.MerkleTree.of([(p.leaf_index, p.address, int(p.amount)) for p in leaves])
        for payout in leaves:
            payout.proof = ["0x" + node.hex() for node in tree.proof(payout.leaf_index)]
        epoch.root = "0x" + tree.root.hex()
        epoch.total = str(sum(int(p.amount) for p in leaves))
        epoch.status = "closed"
    else:
        epoch.status = "empty"
    session.add(
        RewardEpoch(
            id=epoch.id + 1,
            status="open",
            opened_at=now,
            closes_at=now + timedelta(days=settings.reward_epoch_days),
        )
    )
    session.flush()
    return epoch


def _payouts(session: Session, epoch: RewardEpoch) -> list[RewardPayout]:
    """One leaf per user with a linked wallet for all their unpaid allocations."""
    owed: dict[int, list[RewardAllocation]] = defaultdict(list)
    for allocation in session.scalars(
        select(RewardAllocation)
        .where(RewardAllocation.payout_id.is_(None), RewardAllocation.amount != "0")
        .order_by(RewardAllocation.id)
    ):
        owed[allocation.user_id].append(allocation)
    if not owed:
        return []
    wallets = {
        int(user_id): str(address)
        for user_id, address in session.execute(
            select(WalletLink.user_id, WalletLink.address).where(
                WalletLink.user_id.in_(owed), WalletLink.unlinked_at.is_(None)
            )
        )
    }
    payouts: list[RewardPayout] = []
    for user_id in sorted(owed):
        address = wallets.get(user_id)
        if address is None:
            continue  # kept until they link one
        payout = RewardPayout(
            epoch_id=epoch.id,
            user_id=user_id,
            leaf_index=len(payouts),
            address=to_checksum_address(address),
            amount=str(sum(int(a.amount) for a in owed[user_id])),
            proof=[],
        )
        session.add(payout)
        payouts.append(payout)
    session.flush()
    for payout in payouts:
        for allocation in owed[payout.user_id]:
            allocation.payout_id = payout.id
    return payouts
