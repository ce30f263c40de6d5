"""The chain client on the embedded chain (py-evm through web3.py) and on anvil: deploy the reward
contracts, publish an epoch once even when asked twice, relay claims, and one error type for
every revert."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account import Account

from loraloop.chain import merkle
from loraloop.chain.client import Chain, ChainError
from tests import anvil

KEY = bytes.fromhex("44" * 32)
KEY_PERSON = Account.from_key(bytes.fromhex("55" * 32)).address


@pytest.fixture(scope="module", params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def chain(request: pytest.FixtureRequest) -> Iterator[Chain]:
    """The embedded chain, and anvil over JSON-RPC: the same calls, the same errors."""
    if request.param == "embedded":
        yield Chain.embedded(KEY)
        return
    with anvil.running() as url:
        yield Chain.rpc(url, bytes.fromhex(anvil.SIGNER_KEY[2:]), evm_version="cancun")


def test_publish_once_claim_once(chain: Chain) -> None:
    rewards = chain.deploy_rewards(name="loraloop reward", symbol="LLR", cap=0)
    people = [Account.create().address for _ in range(3)]
    amounts = [5 * 10**18, 0, 123]
    leaves = [(i, a, m) for i, (a, m) in enumerate(zip(people, amounts, strict=True))]
    tree = merkle.MerkleTree.of(leaves)
    sent = chain.publish(rewards, 1, tree.root, sum(amounts))
    assert sent is not None
    assert sent.startswith("0x")
    assert len(sent) == 66
    block = chain.web3.eth.block_number
    assert chain.publish(rewards, 1, tree.root, sum(amounts)) is None  # already on chain
    assert chain.web3.eth.block_number == block  # nothing was sent the second time
    with pytest.raises(ChainError, match="another root"):
        chain.publish(rewards, 1, b"\x02" * 32, 1)
    chain.claim(rewards, 1, 0, people[0], amounts[0], list(tree.proof(0)))
    assert chain.balance_of(rewards, people[0]) == amounts[0]
    assert chain.is_claimed(rewards, 1, 0)
    with pytest.raises(ChainError) as again:
        chain.claim(rewards, 1, 0, people[0], amounts[0], list(tree.proof(0)))
    assert again.value.reason == "MerkleDistributor: already claimed"
    with pytest.raises(ChainError) as forged:
        chain.claim(rewards, 1, 2, people[2], 124, list(tree.proof(2)))
    assert forged.value.reason == "MerkleDistributor: invalid proof"
    data = chain.claim_calldata(rewards, 1, 2, people[2], 123, list(tree.proof(2)))
    fn, args = chain.contract("MerkleDistributor", rewards.distributor).decode_function_input(data)
    assert fn.fn_name == "claim"
    assert args["amount"] == 123


def test_the_key_never_shows(chain: Chain) -> None:
    assert KEY.hex() not in repr(chain)
    assert "signer=" in repr(chain)


def test_a_retry_after_minting_mints_nothing_more(chain: Chain) -> None:
    """A crash between funding and publishing: the retry tops up only the shortfall."""
    rewards = chain.deploy_rewards(name="loraloop reward", symbol="LLR", cap=0)
    tree = merkle.MerkleTree.of([(0, Account.create().address, 40), (1, KEY_PERSON, 60)])
    token = chain.contract("RewardToken", rewards.token)
    chain._send(token.functions.mint(rewards.distributor, 100))  # the first attempt's mint
    assert chain.publish(rewards, 1, tree.root, 100) is not None
    assert chain.call(token.functions.totalSupply()) == 100
    second = merkle.MerkleTree.of([(0, KEY_PERSON, 5)])
    chain.publish(rewards, 2, second.root, 5)  # epoch 1 still owes 100: mint 5 only
    assert chain.call(token.functions.totalSupply()) == 105
