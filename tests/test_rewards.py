"""Rewards end to end, on the embedded chain and on a real node (anvil): points in the
ledger → an epoch closes → its root is on chain → the contributor claims (relayed, or from
their own wallet) → the balance on chain equals the ledger's amount; a second claim is
refused; a restart loses nothing; closing or publishing twice (also after a crash between
sending and recording) pays once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from loraloop.api.app import create_app
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import ChainJournal, RewardAllocation, RewardEpoch, User
from loraloop.errors import ConfigurationError
from loraloop.rewards import epochs
from loraloop.rewards.epochs import UNIT, allocate
from loraloop.rewards.onchain import RewardChain, signer_key
from tests import anvil
from tests.factories import link_wallet, make_key, make_points, make_user

ALICE = Account.from_key("0x" + "a1" * 32)
BOB = Account.from_key("0x" + "b2" * 32)


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    with anvil.running() as url:
        yield url


@pytest.fixture(params=["embedded", pytest.param("anvil", marks=pytest.mark.anvil)])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test here runs on both chains: the embedded one and anvil over JSON-RPC."""
    if request.param == "embedded":
        return settings
    changes = {
        "chain_rpc": request.getfixturevalue("anvil_url"),
        "chain_key": anvil.SIGNER_KEY,
        "chain_id": anvil.CHAIN_ID,
    }
    return Settings(**{**settings.model_dump(), **changes})


def _earn(db: Database, user: User, millipoints: int, kind: str = "contribution") -> None:
    with db.session() as session:
        make_points(session, user, millipoints, kind=kind)


def _auth(db: Database, user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_key(db, user, scopes=['manage'])}"}


@pytest.fixture
def people(db: Database) -> dict[str, Any]:
    admin, alice, bob = make_user(db, role="admin"), make_user(db), make_user(db)
    return {
        "admin": _auth(db, admin),
        "alice": alice,
        "bob": bob,
        "a": _auth(db, alice),
        "b": _auth(db, bob),
    }


def _line(state: dict[str, Any], epoch: int) -> dict[str, Any]:
    return next(line for line in state["epochs"] if line["epoch"] == epoch)


def test_the_rule_splits_the_pool_by_side_and_rounds_down() -> None:
    shares = allocate(
        {1: {"contribution": 2000, "review": 1000}, 2: {"contribution": 1000, "compute": 5}},
        pool=1000,
        compute_share=0.3,
    )
    assert {s.side: s.amount for s in shares[1]} == {"community": 700 * 3000 // 4000}
    assert {s.side: s.amount for s in shares[2]} == {"community": 175, "compute": 300}
    lonely = allocate({1: {"review": 7}, 2: {"review": -50}}, pool=10**18, compute_share=0.5)
    assert [s.amount for s in lonely[1]] == [5 * 10**17]  # compute's half is not minted
    assert 2 not in lonely  # a negative total counts as nothing
    thirds = {1: {"review": 1}, 2: {"review": 1}, 3: {"review": 1}}
    odd = allocate(thirds, pool=100, compute_share=0)
    assert sum(s.amount for ss in odd.values() for s in ss) == 99  # the dust stays unminted


def test_earn_close_claim_and_restart(
    client: TestClient, app: FastAPI, db: Database, settings: Settings, people: dict[str, Any]
) -> None:
    link_wallet(client, people["a"], ALICE)
    _earn(db, people["alice"], 3000)
    _earn(db, people["alice"], 1000, kind="compute")
    _earn(db, people["bob"], 1000)  # no wallet yet
    assert client.post("/api/rewards/epochs/1/close", headers=people["a"]).status_code == 404
    closed = client.post("/api/rewards/epochs/1/close", headers=people["admin"])
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "published"
    assert closed.json()["leaves"] == 1  # Bob has no wallet: kept, not paid
    again = client.post("/api/rewards/epochs/1/close", headers=people["admin"])
    assert again.json() == closed.json()  # a repeated request changes nothing
    listed = client.get("/api/rewards/epochs", headers=people["b"]).json()
    assert [(e["epoch"], e["status"]) for e in listed] == [(2, "open"), (1, "published")]
    assert client.post("/api/rewards/epochs/9/close", headers=people["admin"]).status_code == 404
    pool = settings.reward_pool * UNIT
    alice_amount = pool * 7 // 10 * 3 // 4 + pool * 3 // 10
    state = client.get("/api/rewards", headers=people["a"]).json()
    line = _line(state, 1)
    assert line["status"] == "claimable"
    assert int(line["amount"]) == alice_amount
    assert line["breakdown"]["community"]["points"] == 3000
    assert line["breakdown"]["compute"]["amount"] == str(pool * 3 // 10)
    assert state["balance"] == "0"

    claimed = client.post("/api/rewards/epochs/1/claim", headers=people["a"])
    assert claimed.status_code == 200, claimed.text
    assert claimed.json()["account"] == ALICE.address
    state = client.get("/api/rewards", headers=people["a"]).json()
    assert int(state["balance"]) == alice_amount  # read from the chain
    assert _line(state, 1)["status"] == "claimed"
    again = client.post("/api/rewards/epochs/1/claim", headers=people["a"])
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_claimed"

    bob = client.get("/api/rewards", headers=people["b"]).json()
    assert _line(bob, 1)["status"] == "waiting_for_wallet"
    assert client.post("/api/rewards/epochs/1/claim", headers=people["b"]).status_code == 404
    link_wallet(client, people["b"], BOB)
    _earn(db, people["bob"], 500)
    assert client.post("/api/rewards/epochs/2/close", headers=people["admin"]).status_code == 200
    bob = client.get("/api/rewards", headers=people["b"]).json()
    assert _line(bob, 1)["paid_in"] == 2  # epoch 1's tokens waited for the wallet
    second = int(_line(bob, 2)["amount"])
    assert int(_line(bob, 1)["payout_amount"]) == pool * 7 // 10 // 4 + second
    assert client.post("/api/rewards/epochs/2/claim", headers=people["b"]).status_code == 200

    # a restart: a new process, a new in-memory chain rebuilt from the journal
    restarted = create_app(settings, db)
    with TestClient(restarted, base_url="http://127.0.0.1:8000") as fresh:
        after = fresh.get("/api/rewards", headers=people["a"]).json()
        assert int(after["balance"]) == alice_amount
        assert _line(after, 1)["status"] == "claimed"
        assert fresh.post("/api/rewards/epochs/1/claim", headers=people["a"]).status_code == 409
        assert int(fresh.get("/api/rewards", headers=people["b"]).json()["balance"]) == int(
            _line(bob, 1)["payout_amount"]
        )
        assert after["chain"]["token"] == state["chain"]["token"]  # the same contracts


def test_a_self_claim_from_any_wallet_shows_as_claimed(
    client: TestClient, app: FastAPI, db: Database, people: dict[str, Any]
) -> None:
    link_wallet(client, people["a"], ALICE)
    _earn(db, people["alice"], 10)
    client.post("/api/rewards/epochs/1/close", headers=people["admin"])
    call = client.get("/api/rewards/epochs/1/calldata", headers=people["a"]).json()
    assert call["account"] == ALICE.address
    rewards: RewardChain = app.state.rewards
    with db.session() as session:
        chain, contracts = rewards.connect(session)
    assert call["to"] == contracts.distributor
    payer = chain.web3.eth.accounts[3]  # someone else's wallet pays the gas
    chain.web3.eth.send_transaction({"from": payer, "to": call["to"], "data": call["data"]})
    state = client.get("/api/rewards", headers=people["a"]).json()
    assert _line(state, 1)["status"] == "claimed"
    assert int(state["balance"]) == int(call["amount"])
    assert client.get("/api/rewards/epochs/1/calldata", headers=people["b"]).status_code == 404


def test_closing_twice_and_a_crash_before_recording_pay_once(
    app: FastAPI, db: Database, settings: Settings, people: dict[str, Any], client: TestClient
) -> None:
    link_wallet(client, people["a"], ALICE)
    _earn(db, people["alice"], 1000)
    with db.session() as session:
        first = epochs.close(session, settings)
    with db.session() as session:
        current = epochs.current(session, settings)
        assert current.id == first.id + 1
        allocations = session.scalar(select(func.count()).select_from(RewardAllocation))
    assert allocations == 1
    rewards: RewardChain = app.state.rewards
    with db.session() as session:  # the transaction was sent, then the process died
        chain, contracts = rewards.connect(session)
        epoch = session.get(RewardEpoch, first.id)
        assert epoch is not None
        assert epoch.root is not None
        assert epoch.total is not None
        chain.publish(contracts, epoch.id, bytes.fromhex(epoch.root[2:]), int(epoch.total))
    block = chain.web3.eth.block_number
    assert rewards.publish_pending() == [first.id]  # the retry checks the chain first
    assert chain.web3.eth.block_number == block  # and sends nothing
    token = chain.contract("RewardToken", contracts.token)
    assert chain.call(token.functions.totalSupply()) == int(first.total or 0)
    with db.session() as session:
        stored = session.get(RewardEpoch, first.id)
        assert stored is not None
        assert stored.status == "published"
        assert session.scalar(select(func.count()).select_from(ChainJournal)) == 0


def test_an_epoch_closes_on_its_own_when_due(
    app: FastAPI, db: Database, settings: Settings, people: dict[str, Any], client: TestClient
) -> None:
    link_wallet(client, people["a"], ALICE)
    _earn(db, people["alice"], 1000)
    rewards: RewardChain = app.state.rewards
    assert rewards.tick() is None  # not due yet
    with db.session() as session:
        epoch = epochs.current(session, settings)
        epoch.closes_at = epoch.opened_at
    assert rewards.tick() == epoch.id
    state = client.get("/api/rewards", headers=people["a"]).json()
    assert _line(state, epoch.id)["status"] == "claimable"
    empty = rewards.tick  # the next epoch: nothing earned, nothing to publish
    with db.session() as session:
        following = epochs.current(session, settings)
        following.closes_at = following.opened_at
    assert empty() == following.id
    with db.session() as session:
        assert epochs.get(session, following.id).status == "empty"


def test_the_signer_key_comes_from_settings_or_is_generated_once(tmp_path: Path) -> None:
    def make(**changes: Any) -> Settings:
        return Settings(env="development", home=tmp_path / "home", secret_key="s" * 20, **changes)

    generated = signer_key(make())
    assert signer_key(make()) == generated
    assert (tmp_path / "home" / "chain.key").stat().st_mode & 0o077 == 0
    given = make(chain_key="0x" + "33" * 32)
    assert signer_key(given) == bytes.fromhex("33" * 32)
    keyfile = tmp_path / "signer"
    keyfile.write_text("44" * 32 + "\n")
    assert signer_key(make(chain_key_file=keyfile)) == bytes.fromhex("44" * 32)
    with pytest.raises(ConfigurationError, match="no signer key"):
        signer_key(make(chain_rpc="http://127.0.0.1:1"))
    with pytest.raises(ConfigurationError, match="32 bytes"):
        signer_key(make(chain_key="0x1234"))
    assert "33" * 32 not in repr(given)
