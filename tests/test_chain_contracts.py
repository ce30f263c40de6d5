"""The reward contracts with titanoboa: the stored artifacts are what the sources compile to;
the token mints only for its owner and within its cap; the distributor publishes one root per
epoch, only for its owner, and pays each leaf once, to its account, whoever relays the claim;
property tests over random trees (hypothesis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loraloop.chain import contracts, merkle

CAP = 10**27


@pytest.fixture
def env() -> Iterator[None]:
    with boa.env.anchor():  # every test starts from the same chain state
        yield


def _deploy(cap: int = CAP) -> tuple[Any, Any, str]:
    owner = boa.env.generate_address("owner")
    with boa.env.prank(owner):
        token = boa.load(str(contracts.source_path("RewardToken")), "loraloop reward", "LLR", cap)
        distributor = boa.load(str(contracts.source_path("MerkleDistributor")), token.address)
    return token, distributor, owner


def test_the_stored_artifacts_are_what_the_sources_compile_to() -> None:
    for name in contracts.CONTRACTS:
        source = contracts.source_path(name).read_text("utf-8")
        fresh = contracts.compile_source(name, source)
        stored = contracts.artifact(name)
        assert stored.source_sha256 == fresh.source_sha256, f"{name}: run scripts/compile-contracts"
        assert stored.bytecode == fresh.bytecode, name
        assert json.dumps(stored.abi, sort_keys=True) == json.dumps(fresh.abi, sort_keys=True)
        assert stored.evm_version == contracts.DEFAULT_EVM


def test_another_evm_version_compiles_from_the_sources() -> None:
    paris = contracts.artifact("MerkleDistributor", "paris")
    assert paris.evm_version == "paris"
    assert paris.bytecode != contracts.artifact("MerkleDistributor").bytecode  # no PUSH0/MCOPY


def test_only_the_owner_mints_and_never_past_the_cap(env: None) -> None:
    token, _, owner = _deploy(cap=1000)
    stranger = boa.env.generate_address("stranger")
    with boa.env.prank(stranger), boa.reverts("RewardToken: only the owner mints"):
        token.mint(stranger, 1)
    with boa.env.prank(owner):
        token.mint(stranger, 600)
        with boa.reverts("RewardToken: cap exceeded"):
            token.mint(stranger, 401)
        token.mint(stranger, 400)
    assert token.totalSupply() == 1000
    assert token.balanceOf(stranger) == 1000
    with boa.env.prank(stranger):
        assert token.transfer(owner, 10)
        with boa.reverts("RewardToken: balance too low"):
            token.transfer(owner, 991)
        token.approve(owner, 5)
    with boa.env.prank(owner):
        token.transferFrom(stranger, owner, 5)
        with boa.reverts("RewardToken: allowance too low"):
            token.transferFrom(stranger, owner, 1)
    assert token.balanceOf(owner) == 15


def _tree(amounts: list[int]) -> tuple[merkle.MerkleTree, list[str]]:
    accounts = [boa.env.generate_address(f"claimant-{i}") for i in range(len(amounts))]
    return merkle.MerkleTree.of(
        [(i, a, amount) for i, (a, amount) in enumerate(zip(accounts, amounts, strict=True))]
    ), accounts


def test_publish_once_per_epoch_and_claims_pay_the_account_once(env: None) -> None:
    token, distributor, owner = _deploy()
    tree, accounts = _tree([100, 250, 0, 7])
    stranger = boa.env.generate_address("stranger")
    with boa.env.prank(stranger), boa.reverts("MerkleDistributor: only the owner publishes"):
        distributor.publish(1, tree.root, 357)
    with boa.env.prank(owner):
        token.mint(distributor.address, 356)
        with boa.reverts("MerkleDistributor: underfunded"):  # never a root it cannot pay
            distributor.publish(1, tree.root, 357)
        token.mint(distributor.address, 1)
        distributor.publish(1, tree.root, 357)
        assert distributor.outstanding() == 357
        with boa.reverts("MerkleDistributor: epoch already published"):
            distributor.publish(1, b"\x01" * 32, 357)
        with boa.reverts("MerkleDistributor: underfunded"):  # epoch 1's tokens are owed
            distributor.publish(2, tree.root, 1)
    relayer = boa.env.generate_address("relayer")
    with boa.env.prank(relayer):  # anyone may send a claim; the account is paid
        with boa.reverts("MerkleDistributor: no root for this epoch"):
            distributor.claim(2, 1, accounts[1], 250, list(tree.proof(1)))
        with boa.reverts("MerkleDistributor: invalid proof"):
            distributor.claim(1, 1, accounts[1], 251, list(tree.proof(1)))
        with boa.reverts("MerkleDistributor: invalid proof"):
            distributor.claim(1, 1, relayer, 250, list(tree.proof(1)))
        with boa.reverts("MerkleDistributor: invalid proof"):
            distributor.claim(1, 0, accounts[1], 250, list(tree.proof(1)))
        with boa.reverts("MerkleDistributor: invalid proof"):
            distributor.claim(1, 1, accounts[1], 250, list(tree.proof(0)))
        distributor.claim(1, 1, accounts[1], 250, list(tree.proof(1)))
        assert distributor.is_claimed(1, 1)
        assert not distributor.is_claimed(1, 0)
        with boa.reverts("MerkleDistributor: already claimed"):
            distributor.claim(1, 1, accounts[1], 250, list(tree.proof(1)))
    assert token.balanceOf(accounts[1]) == 250
    assert token.balanceOf(relayer) == 0
    assert token.balanceOf(distributor.address) == 107
    assert distributor.outstanding() == 107


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    amounts=st.lists(st.integers(min_value=0, max_value=10**24), min_size=1, max_size=40),
    order=st.randoms(use_true_random=False),
)
def test_every_leaf_claims_once_in_any_order(env: None, amounts: list[int], order: Any) -> None:
    with boa.env.anchor():
        token, distributor, owner = _deploy()
        tree, accounts = _tree(amounts)
        with boa.env.prank(owner):
            token.mint(distributor.address, sum(amounts))
            distributor.publish(7, tree.root, sum(amounts))
        indexes = list(range(len(amounts)))
        order.shuffle(indexes)
        for i in indexes:
            proof = list(tree.proof(i))
            if amounts[i] > 0:
                with boa.reverts("MerkleDistributor: invalid proof"):
                    distributor.claim(7, i, accounts[i], amounts[i] - 1, proof)
            distributor.claim(7, i, accounts[i], amounts[i], proof)
            with boa.reverts("MerkleDistributor: already claimed"):
                distributor.claim(7, i, accounts[i], amounts[i], proof)
        assert [token.balanceOf(a) for a in accounts] == amounts
        assert token.balanceOf(distributor.address) == 0
        assert distributor.outstanding() == 0
