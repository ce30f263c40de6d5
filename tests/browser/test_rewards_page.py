"""The wallet and rewards pages in a real browser, with an injected EIP-1193 provider backed by
an eth-account key (as MetaMask would offer ``eth_requestAccounts`` and ``personal_sign``):
link the wallet from the account page, earn points, the epoch closes and is published on the
embedded chain, "Claim" pays the balance on chain, and a second claim (from a page opened
before the first) says it was already claimed."""

from __future__ import annotations

import re

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import FastAPI
from playwright.sync_api import BrowserContext, Page, expect

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.rewards import epochs
from loraloop.rewards.onchain import RewardChain
from loraloop.web import i18n
from loraloop.web.pages_rewards import tokens
from tests.browser.test_catalog_pages import sign_in
from tests.browser.test_journey import Watch
from tests.factories import make_points, make_user

pytestmark = pytest.mark.browser

JA = i18n.translator("ja")
WALLET = Account.from_key("0x" + "c3" * 32)

PROVIDER = (
    "window.ethereum = { isMetaMask: true, request: async function (call) {"
    f"  if (call.method === 'eth_requestAccounts') return ['{WALLET.address}'];"
    "  if (call.method === 'personal_sign')"
    "    return await window.__walletSign(call.params[0], call.params[1]);"
    "  throw { code: 4200, message: 'unsupported ' + call.method };"
    "} };"
)


@pytest.fixture
def wallet_context(context: BrowserContext) -> tuple[BrowserContext, list[str]]:
    signed: list[str] = []

    def sign(message_hex: str, address: str) -> str:
        assert address == WALLET.address
        message = bytes.fromhex(message_hex.removeprefix("0x"))
        signed.append(message.decode("utf-8"))
        signature = WALLET.sign_message(encode_defunct(primitive=message)).signature.hex()
        return "0x" + signature.removeprefix("0x")

    context.expose_function("__walletSign", sign)
    context.add_init_script(PROVIDER)
    return context, signed


def test_link_a_wallet_earn_close_and_claim(
    wallet_context: tuple[BrowserContext, list[str]],
    live_server: str,
    app: FastAPI,
    db: Database,
    settings: Settings,
    screenshots: object,
) -> None:
    context, signed = wallet_context
    page = context.new_page()
    watch = Watch(page, live_server)
    user = make_user(db)
    sign_in(page, user)

    page.goto("/account")
    expect(page.locator("[data-no-wallet]")).to_be_visible()
    page.get_by_role("button", name=JA("rewards.wallet.link")).click()
    expect(page.locator("[data-address]")).to_have_text(WALLET.address.lower())
    assert len(signed) == 1
    assert "wants you to sign in with your Ethereum account" in signed[0]
    assert WALLET.address in signed[0]

    with db.session() as session:
        make_points(session, user, 2500)
    rewards: RewardChain = app.state.rewards
    with db.session() as session:
        closed = epochs.close(session, settings)
        rewards.publish(session, closed)
        amount = int(closed.total or 0)
    assert amount == settings.reward_pool * epochs.UNIT * 7 // 10

    page.goto("/rewards")
    line = page.locator(f"[data-epoch='{closed.id}']")
    expect(line.locator("[data-status-label]")).to_have_text(JA("rewards.status.claimable"))
    expect(line).to_contain_text(tokens(amount))
    stale = context.new_page()  # opened before the claim: its button still offers it
    stale.goto("/rewards")
    page.screenshot(path=f"{screenshots}/rewards.png", full_page=True)

    line.get_by_role("button", name=JA("rewards.claim")).click()
    expect(line.locator("[data-status-label]")).to_have_text(JA("rewards.status.claimed"))
    expect(line.locator("[data-claim-tx] code")).to_have_text(re.compile(r"^(0x)?[0-9a-f]{64}$"))
    page.reload()
    expect(page.locator("[data-balance]")).to_contain_text(tokens(amount))

    again = stale.locator(f"[data-epoch='{closed.id}']")
    again.get_by_role("button", name=JA("rewards.claim")).click()
    expect(again.locator("[data-claim-error]")).to_have_text(JA("rewards.js.already_claimed"))
    expect(again.locator("[data-status-label]")).to_have_text(JA("rewards.status.claimed"))
    assert watch.problems == []


def test_without_a_browser_wallet_the_page_says_what_to_do(
    context: BrowserContext, live_server: str, db: Database
) -> None:
    page: Page = context.new_page()
    sign_in(page, make_user(db))
    page.goto("/rewards")
    page.get_by_role("button", name=JA("rewards.wallet.link")).click()
    expect(page.locator("[data-wallet-error]")).to_have_text(JA("rewards.js.no_wallet"))
