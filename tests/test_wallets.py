"""Linking a wallet with Sign-In with Ethereum, through the REST API with real eth-account
signatures: the happy path, and each refusal the issue names (wrong domain, reused nonce,
expired message, wrong chain, tampered text, a different signer), plus the rules of one
payout address per account and one account per address."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient

from loraloop.chain import siwe
from loraloop.db.engine import Database
from tests.factories import make_key, make_user

ALICE = Account.from_key("0x" + "11" * 32)
MALLORY = Account.from_key("0x" + "22" * 32)


def _sign(text: str, account: Any = ALICE) -> str:
    return "0x" + account.sign_message(encode_defunct(text=text)).signature.hex().removeprefix("0x")


@pytest.fixture
def as_user(client: TestClient, db: Database) -> Callable[[], dict[str, str]]:
    def make() -> dict[str, str]:
        return {"Authorization": f"Bearer {make_key(db, make_user(db), scopes=['manage'])}"}

    return make


def _challenge(client: TestClient, auth: dict[str, str], account: Any = ALICE) -> str:
    issued = client.post("/api/wallet/nonce", headers=auth, json={"address": account.address})
    assert issued.status_code == 201, issued.text
    message = issued.json()["message"]
    assert siwe.parse(message).domain == "127.0.0.1:8000"  # the server it was asked of
    assert f"\n{account.address}\n" in message
    return str(message)


def _link(client: TestClient, auth: dict[str, str], message: str, signature: str) -> Any:
    return client.post(
        "/api/wallet/link", headers=auth, json={"message": message, "signature": signature}
    )


def test_a_signed_message_links_the_wallet(
    client: TestClient, as_user: Callable[[], dict[str, str]]
) -> None:
    auth = as_user()
    message = _challenge(client, auth)
    linked = _link(client, auth, message, _sign(message))
    assert linked.status_code == 200, linked.text
    assert linked.json()["address"] == ALICE.address.lower()
    state = client.get("/api/wallet", headers=auth).json()
    assert state["address"] == ALICE.address.lower()


def _rewrite(message: str, **fields: Any) -> str:
    parsed = siwe.parse(message)
    return siwe.SiweMessage(**{**parsed.__dict__, **fields}).text()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong domain", "siwe_domain"),
        ("wrong chain", "siwe_chain"),
        ("expired", "siwe_expired"),
        ("tampered", "siwe_signature"),
        ("other signer", "siwe_signature"),
        ("not yet valid", "siwe_time"),
        ("unknown nonce", "siwe_nonce"),
        ("garbage", "siwe_malformed"),
    ],
)
def test_each_bad_message_is_refused(
    client: TestClient, as_user: Callable[[], dict[str, str]], case: str, code: str
) -> None:
    auth = as_user()
    message = _challenge(client, auth)
    now = datetime.now(UTC)
    if case == "wrong domain":
        message = _rewrite(message, domain="evil.example")
    elif case == "wrong chain":
        message = _rewrite(message, chain_id=1)
    elif case == "expired":
        message = _rewrite(
            message, issued_at=now - timedelta(hours=2), expiration_time=now - timedelta(hours=1)
        )
    elif case == "not yet valid":
        message = _rewrite(message, not_before=now + timedelta(hours=1))
    elif case == "unknown nonce":
        message = _rewrite(message, nonce="Zz" * 12)
    signature = _sign(message, MALLORY if case == "other signer" else ALICE)
    if case == "tampered":  # signed, then a word changed
        message = message.replace("receive rewards", "receive all rewards")
    if case == "garbage":
        message = "please link my wallet " + ALICE.address
    refused = _link(client, auth, message, signature)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == code
    assert client.get("/api/wallet", headers=auth).json()["address"] is None


def test_a_nonce_works_once_and_only_for_its_account(
    client: TestClient, as_user: Callable[[], dict[str, str]]
) -> None:
    auth, other = as_user(), as_user()
    message = _challenge(client, auth)
    signature = _sign(message)
    stolen = _link(client, other, message, signature)
    assert stolen.json()["error"]["code"] == "siwe_nonce"
    assert _link(client, auth, message, signature).status_code == 200
    again = _link(client, auth, message, signature)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "siwe_nonce_used"


def test_one_address_per_account_and_one_account_per_address(
    client: TestClient, as_user: Callable[[], dict[str, str]]
) -> None:
    alice_account, other = as_user(), as_user()
    first = _challenge(client, alice_account)
    assert _link(client, alice_account, first, _sign(first)).status_code == 200
    claim = _challenge(client, other)
    taken = _link(client, other, claim, _sign(claim))
    assert taken.status_code == 409
    assert "another account" in taken.json()["error"]["message"]
    change = _challenge(client, alice_account, MALLORY)  # a fresh signature changes it
    assert _link(client, alice_account, change, _sign(change, MALLORY)).status_code == 200
    state = client.get("/api/wallet", headers=alice_account).json()
    assert state["address"] == MALLORY.address.lower()
    assert [w["address"] for w in state["history"]] == [
        MALLORY.address.lower(),
        ALICE.address.lower(),
    ]
    assert state["history"][1]["unlinked_at"] is not None
    freed = _challenge(client, other)  # the old address is free for the other account now
    assert _link(client, other, freed, _sign(freed)).status_code == 200


def test_signed_out_gets_401(client: TestClient) -> None:
    assert client.post("/api/wallet/nonce", json={}).status_code == 401
    assert (
        client.post("/api/wallet/link", json={"message": "x", "signature": "y"}).status_code == 401
    )
    assert client.get("/api/wallet").status_code == 401


def test_the_message_round_trips_through_the_parser() -> None:
    message = siwe.SiweMessage(
        domain="loraloop.example",
        address=ALICE.address,
        uri="https://loraloop.example",
        chain_id=31337,
        nonce="abcdEFGH1234",
        issued_at=datetime(2026, 12, 1, tzinfo=UTC),
        statement="Link it.",
        resources=("https://loraloop.example/terms",),
        request_id="r-1",
    )
    assert siwe.parse(message.text()) == message
    assert siwe.recover(message.text(), _sign(message.text())) == ALICE.address
    with pytest.raises(siwe.SiweError, match="checksummed"):
        siwe.parse(message.text().replace(ALICE.address, ALICE.address.lower()))
