"""The rewards' side of the chain: which chain, which contracts, the journal, publish, claim.

One :class:`RewardChain` per server process, connected on first use:

- **embedded** (no ``chain_rpc``): py-evm in memory. On connect the contracts are deployed
  again by the same signer from nonce 0, so they land at the same addresses (checked against
  the recorded deployment), and every journalled transaction is replayed in order, so
  balances and claims survive a restart.
- **RPC** (``chain_rpc``): the contracts named by ``chain_token``/``chain_distributor``, or
  those deployed earlier on that chain id, or deployed now and recorded.

Every transaction sent is journalled in the caller's database transaction (a second one
would wait on SQLite's write lock the caller holds). Idempotency never rests on the journal:
publishing asks the chain whether the epoch has its root, claiming asks whether the leaf is
claimed; and after a replay every epoch recorded as published is published again if its
root is missing (its journal entry lost with a rolled-back transaction).
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import Any

from eth_utils.address import to_checksum_address
from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.chain.client import Chain, ChainError, Deployment
from loraloop.config import Settings
from loraloop.db.engine import Database, utcnow
from loraloop.db.tables import ChainDeployment, ChainJournal, RewardEpoch, RewardPayout
from loraloop.errors import (
    ConfigurationError,
    Conflict,
    InvalidRequest,
    LoraloopError,
    UpstreamFailed,
)
from loraloop.rewards import epochs

__all__ = ["RewardChain", "signer_key"]

log = logging.getLogger(__name__)


def signer_key(settings: Settings) -> bytes:
    """The platform's signer: ``chain_key``, else ``chain_key_file``, else (embedded chain
    only) a key generated once into ``<home>/chain.key``."""
    value = settings.chain_key.get_secret_value().strip()
    if not value and settings.chain_key_file is not None:
        try:
            value = settings.chain_key_file.read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigurationError(
                f"chain_key_file {settings.chain_key_file} cannot be read: {exc.strerror}"
            ) from exc
    if not value:
        if settings.chain_rpc:
            raise ConfigurationError(
                "chain_rpc is set but no signer key: set LORALOOP_CHAIN_KEY or chain_key_file"
            )
        value = settings.generated_secret("chain.key", lambda: secrets.token_hex(32))
    try:
        key = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigurationError("the chain signer key must be 32 bytes of hex")
    return key


class RewardChain:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings
        self._lock = threading.Lock()
        self._chain: Chain | None = None
        self._rewards: Deployment | None = None

    @property
    def embedded(self) -> bool:
        return not self.settings.chain_rpc

    def connect(self, session: Session) -> tuple[Chain, Deployment]:
        """The chain and the reward contracts on it (connecting, deploying and replaying on
        the first call, in ``session``)."""
        with self._lock:
            if self._chain is None or self._rewards is None:
                chain = self._open()
                rewards = self._deployment(session, chain)
                if self.embedded:
                    self._replay(session, chain, rewards)
                self._chain, self._rewards = chain, rewards
            return self._chain, self._rewards

    def _open(self) -> Chain:
        key = signer_key(self.settings)
        if self.embedded:
            chain = Chain.embedded(key)
        else:
            assert self.settings.chain_rpc is not None
            chain = Chain.rpc(
                self.settings.chain_rpc, key, evm_version=self.settings.chain_evm_version
            )
        try:
            chain_id = chain.chain_id
        except Exception as exc:  # the node is down or not an EVM node
            raise UpstreamFailed(
                f"the chain at {self.settings.chain_rpc} does not answer: {exc}",
                code="chain_unavailable",
            ) from exc
        if chain_id != self.settings.chain_id:
            raise ConfigurationError(
                f"the chain's id is {chain_id} but chain_id is {self.settings.chain_id}; "
                f"set LORALOOP_CHAIN_ID={chain_id} (wallet sign-in names it)"
            )
        return chain

    def _deployment(self, session: Session, chain: Chain) -> Deployment:
        s = self.settings
        if s.chain_token and s.chain_distributor and not self.embedded:
            return Deployment(token=s.chain_token, distributor=s.chain_distributor)
        row = session.scalar(
            select(ChainDeployment).where(ChainDeployment.chain_id == chain.chain_id)
        )
        if row is not None and not self.embedded:
            return Deployment(token=row.token, distributor=row.distributor)
        deployed = chain.deploy_rewards(
            name=s.reward_token_name,
            symbol=s.reward_token_symbol,
            cap=s.reward_token_cap * epochs.UNIT,
        )
        if row is None:
            session.add(
                ChainDeployment(
                    chain_id=chain.chain_id,
                    token=deployed.token,
                    distributor=deployed.distributor,
                    evm_version=chain.evm_version,
                )
            )
            session.flush()
        elif (row.token, row.distributor) != (deployed.token, deployed.distributor):
            raise ConfigurationError(
                "the embedded chain's contracts did not land where they did before; was "
                "chain.key replaced? The journal cannot be replayed onto other contracts."
            )
        log.info("reward contracts: token %s, distributor %s", deployed.token, deployed.distributor)
        return deployed

    def _replay(self, session: Session, chain: Chain, rewards: Deployment) -> None:
        journal = session.scalars(
            select(ChainJournal)
            .where(ChainJournal.chain_id == chain.chain_id)
            .order_by(ChainJournal.id)
        ).all()
        for entry in journal:
            try:
                self._apply(chain, rewards, entry.operation, entry.args)
            except ChainError as exc:  # the journal and the chain disagree: say so, go on
                log.error("journal entry %d (%s): %s", entry.id, entry.operation, exc.reason)
        published = session.scalars(
            select(RewardEpoch).where(RewardEpoch.status == "published").order_by(RewardEpoch.id)
        )
        for epoch in published:
            args = _publish_args(epoch)
            tx = self._apply(chain, rewards, "publish", args)  # sends nothing when it is there
            if tx is not None:
                self._journal(session, chain, "publish", args, tx)
        if journal:
            log.info("embedded chain: replayed %d journalled transactions", len(journal))

    @staticmethod
    def _apply(chain: Chain, rewards: Deployment, operation: str, args: dict[str, Any]) -> Any:
        if operation == "publish":
            return chain.publish(
                rewards, args["epoch"], bytes.fromhex(args["root"][2:]), int(args["total"])
            )
        if operation == "claim":
            return chain.claim(
                rewards,
                args["epoch"],
                args["index"],
                args["account"],
                int(args["amount"]),
                [bytes.fromhex(p[2:]) for p in args["proof"]],
            )
        raise ValueError(f"unknown journal operation {operation!r}")

    @staticmethod
    def _journal(
        session: Session, chain: Chain, operation: str, args: dict[str, Any], tx: str
    ) -> None:
        session.add(
            ChainJournal(chain_id=chain.chain_id, operation=operation, args=args, tx_hash=tx)
        )

    # the operations ---------------------------------------------------------------------

    def publish(self, session: Session, epoch: RewardEpoch) -> RewardEpoch:
        """Fund the distributor and publish a closed epoch's root (once, whatever happens)."""
        if epoch.status != "closed":
            return epoch
        args = _publish_args(epoch)
        chain, rewards = self.connect(session)
        tx = self._apply(chain, rewards, "publish", args)  # checks the chain under its lock
        if tx is not None:
            self._journal(session, chain, "publish", args, tx)
        epoch.status, epoch.published_at = "published", utcnow()
        epoch.tx_hash = tx if tx is not None else epoch.tx_hash
        session.flush()
        return epoch

    def claim(self, session: Session, payout: RewardPayout) -> RewardPayout:
        """Relay the claim from the platform's account (the user pays no gas)."""
        epoch = session.get(RewardEpoch, payout.epoch_id)
        if epoch is None or epoch.status != "published":
            raise Conflict(
                f"epoch {payout.epoch_id} is not on chain yet; try again in a minute",
                code="epoch_not_published",
            )
        chain, rewards = self.connect(session)
        args = self._claim_args(payout)
        with chain.lock:
            if chain.is_claimed(rewards, payout.epoch_id, payout.leaf_index):
                payout.claimed_at = payout.claimed_at or utcnow()
                session.flush()
                raise Conflict(
                    f"epoch {payout.epoch_id}'s reward was already claimed",
                    code="already_claimed",
                )
            try:
                tx = self._apply(chain, rewards, "claim", args)
            except ChainError as exc:
                raise InvalidRequest(f"the chain refused the claim: {exc.reason}") from exc
            self._journal(session, chain, "claim", args, tx)
        payout.claim_tx, payout.claimed_at = tx, utcnow()
        session.flush()
        return payout

    def is_claimed(self, session: Session, payout: RewardPayout) -> bool:
        chain, rewards = self.connect(session)
        return chain.is_claimed(rewards, payout.epoch_id, payout.leaf_index)

    def calldata(self, session: Session, payout: RewardPayout) -> dict[str, Any]:
        """What a self-claim from any wallet sends (gas paid by whoever sends it)."""
        chain, rewards = self.connect(session)
        args = self._claim_args(payout)
        proof = [bytes.fromhex(p[2:]) for p in args["proof"]]
        data = chain.claim_calldata(
            rewards, payout.epoch_id, payout.leaf_index, payout.address, int(payout.amount), proof
        )
        return {"chain_id": chain.chain_id, "to": rewards.distributor, "data": data, **args}

    def balance(self, session: Session, address: str) -> int:
        chain, rewards = self.connect(session)
        return chain.balance_of(rewards, to_checksum_address(address))

    @staticmethod
    def _claim_args(payout: RewardPayout) -> dict[str, Any]:
        return {
            "epoch": payout.epoch_id,
            "index": payout.leaf_index,
            "account": payout.address,
            "amount": payout.amount,
            "proof": list(payout.proof),
        }

    def close_now(self, session: Session, epoch_id: int) -> RewardEpoch:
        """Close an open epoch and publish it; a chain that fails now leaves it ``closed``
        (amounts and proofs kept) for the clock to publish on a later pass."""
        closed = epochs.close(session, self.settings, epoch_id=epoch_id)
        try:
            with session.begin_nested():
                self.publish(session, closed)
        except (LoraloopError, ChainError) as exc:
            log.warning("epoch %d closed, not yet published: %s", closed.id, exc)
        return closed

    # the clock ----------------------------------------------------------------------------

    def tick(self) -> int | None:
        """Close the epoch when its time is up, then publish every closed epoch not yet on
        chain (also those a crash or an unreachable chain left between the two); the number
        of the epoch closed now, if any."""
        closed = None
        with self.db.session() as session:
            if epochs.due(session, self.settings):
                closed = epochs.close(session, self.settings).id
        self.publish_pending()
        return closed

    def publish_pending(self) -> list[int]:
        done = []
        with self.db.session() as session:
            pending = session.scalars(
                select(RewardEpoch).where(RewardEpoch.status == "closed").order_by(RewardEpoch.id)
            ).all()
            for epoch in pending:
                self.publish(session, epoch)
                done.append(epoch.id)
        return done


def _publish_args(epoch: RewardEpoch) -> dict[str, Any]:
    if epoch.root is None or epoch.total is None:
        raise ValueError(f"epoch {epoch.id} has no tree to publish")
    return {"epoch": epoch.id, "root": epoch.root, "total": epoch.total}
