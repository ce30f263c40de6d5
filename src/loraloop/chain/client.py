"""A chain to pay rewards on: the embedded one (py-evm in this process, through web3.py's
``EthereumTesterProvider``) or any EVM JSON-RPC endpoint, with one signer key.

Every call goes through one lock (py-evm is not thread-safe, and one signer's nonces must not
interleave). Reverts from every backend (eth-tester's ``TransactionFailed``, web3's
``ContractLogicError``, a failed receipt) become one :class:`ChainError` carrying the
contract's reason. The signer key is never logged or shown.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from loraloop.chain import contracts

__all__ = ["Chain", "ChainError", "Deployment"]

_REASON = re.compile(r"execution reverted:?\s*(.*)", re.S)
_FUNDING = 10**21
"""Wei the embedded chain's first account gives the signer (gas for every transaction)."""


class ChainError(Exception):
    """A transaction or call the chain refused; ``reason`` is the contract's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _hex(value: bytes) -> str:
    """0x-prefixed hex, whichever way the backend's bytes type prints itself."""
    return "0x" + bytes(value).hex()


def _reason(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    found = _REASON.search(text)
    return (found.group(1) or "reverted without a reason").strip("'\" ") if found else text


@dataclass(frozen=True)
class Deployment:
    token: str
    distributor: str


class Chain:
    def __init__(self, web3: Any, signer: LocalAccount, *, evm_version: str) -> None:
        self.web3 = web3
        self.signer = signer
        self.evm_version = evm_version
        self.lock = threading.RLock()

    def __repr__(self) -> str:  # the key never shows
        return f"Chain(chain_id={self.chain_id}, signer={self.signer.address})"

    @classmethod
    def embedded(cls, signer_key: bytes) -> Chain:
        """A fresh in-memory chain (py-evm); the signer is funded from its first account."""
        from web3 import EthereumTesterProvider, Web3
        from web3.types import Wei

        web3 = Web3(EthereumTesterProvider())
        signer = Account.from_key(signer_key)
        web3.eth.send_transaction(
            {"from": web3.eth.accounts[0], "to": signer.address, "value": Wei(_FUNDING)}
        )
        return cls(web3, signer, evm_version=contracts.DEFAULT_EVM)

    @classmethod
    def rpc(cls, url: str, signer_key: bytes, *, evm_version: str) -> Chain:
        from web3 import HTTPProvider, Web3

        return cls(Web3(HTTPProvider(url)), Account.from_key(signer_key), evm_version=evm_version)

    @property
    def chain_id(self) -> int:
        return int(self.web3.eth.chain_id)

    # transactions ---------------------------------------------------------------------------

    def _send(self, built: Any) -> Any:
        """Sign and send one transaction; its receipt (ChainError if it reverted)."""
        with self.lock:
            try:
                tx = built.build_transaction(
                    {
                        "from": self.signer.address,
                        "nonce": self.web3.eth.get_transaction_count(self.signer.address),
                        "chainId": self.chain_id,
                    }
                )
                signed = self.signer.sign_transaction(tx)
                digest = self.web3.eth.send_raw_transaction(signed.raw_transaction)
                receipt = self.web3.eth.wait_for_transaction_receipt(digest)
            except ChainError:
                raise
            except Exception as exc:  # every backend's revert, normalised
                if "revert" in str(exc).lower():
                    raise ChainError(_reason(exc)) from exc
                raise
            if receipt.status != 1:
                raise ChainError(f"transaction {digest.hex()} failed")
            return receipt

    def call(self, function: Any) -> Any:
        with self.lock:
            try:
                return function.call()
            except Exception as exc:
                if "revert" in str(exc).lower():
                    raise ChainError(_reason(exc)) from exc
                raise

    def contract(self, name: str, address: str) -> Any:
        return self.web3.eth.contract(
            address=address, abi=contracts.artifact(name, self.evm_version).abi
        )

    def deploy(self, name: str, *args: Any) -> str:
        built = contracts.artifact(name, self.evm_version)
        factory = self.web3.eth.contract(abi=built.abi, bytecode=built.bytecode)
        return str(self._send(factory.constructor(*args)).contractAddress)

    def deploy_rewards(self, *, name: str, symbol: str, cap: int) -> Deployment:
        """The token and its distributor, both owned by the signer."""
        token = self.deploy("RewardToken", name, symbol, cap)
        return Deployment(token=token, distributor=self.deploy("MerkleDistributor", token))

    # the reward operations ---------------------------------------------------------------

    def root_of(self, rewards: Deployment, epoch: int) -> bytes:
        distributor = self.contract("MerkleDistributor", rewards.distributor)
        return bytes(self.call(distributor.functions.roots(epoch)))

    def publish(self, rewards: Deployment, epoch: int, root: bytes, total: int) -> str | None:
        """Fund the distributor and publish the epoch's root, unless the chain already has a
        root for it (a retry after a crash between sending and recording): the transaction
        hash, or None when nothing was sent. Funding mints only the shortfall between what
        the distributor holds and what it owes with this epoch, so a retry after a crash
        between minting and publishing mints nothing more."""
        with self.lock:
            existing = self.root_of(rewards, epoch)
            if existing != b"\x00" * 32:
                if existing != root:
                    raise ChainError(
                        f"epoch {epoch} already has another root on chain: 0x{existing.hex()}"
                    )
                return None
            token = self.contract("RewardToken", rewards.token)
            distributor = self.contract("MerkleDistributor", rewards.distributor)
            owed = int(self.call(distributor.functions.outstanding())) + total
            shortfall = owed - self.balance_of(rewards, rewards.distributor)
            if shortfall > 0:
                self._send(token.functions.mint(rewards.distributor, shortfall))
            receipt = self._send(distributor.functions.publish(epoch, root, total))
            return _hex(receipt.transactionHash)

    def claim(
        self,
        rewards: Deployment,
        epoch: int,
        index: int,
        account: str,
        amount: int,
        proof: list[bytes],
    ) -> str:
        """Relay a claim from the signer's account (gasless for the claimant)."""
        distributor = self.contract("MerkleDistributor", rewards.distributor)
        receipt = self._send(distributor.functions.claim(epoch, index, account, amount, proof))
        return _hex(receipt.transactionHash)

    def is_claimed(self, rewards: Deployment, epoch: int, index: int) -> bool:
        distributor = self.contract("MerkleDistributor", rewards.distributor)
        return bool(self.call(distributor.functions.is_claimed(epoch, index)))

    def balance_of(self, rewards: Deployment, account: str) -> int:
        token = self.contract("RewardToken", rewards.token)
        return int(self.call(token.functions.balanceOf(account)))

    def claim_calldata(
        self,
        rewards: Deployment,
        epoch: int,
        index: int,
        account: str,
        amount: int,
        proof: list[bytes],
    ) -> str:
        """The calldata for a self-claim from any wallet (to: the distributor)."""
        distributor = self.contract("MerkleDistributor", rewards.distributor)
        return str(distributor.encode_abi("claim", args=[epoch, index, account, amount, proof]))
