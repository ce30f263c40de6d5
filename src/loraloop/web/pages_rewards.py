"""The rewards page (``/rewards``): your payout wallet (linked from the browser's EIP-1193
wallet with Sign-In with Ethereum), your token balance read from the chain, the points
accruing in the open epoch, and every closed epoch's tokens with their breakdown and status,
with "Claim" (relayed by the platform: no gas for you) or the calldata for a claim from your
own wallet. ``static/rewards.js`` does the wallet and claim steps through the REST API.

Everything comes from :mod:`loraloop.rewards.statements`, the same read ``GET /api/rewards``
returns, so another user's rewards never reach the template.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from loraloop.api.deps import AppDatabase, AppSettings
from loraloop.chain.client import ChainError
from loraloop.errors import UpstreamFailed
from loraloop.identity import wallets
from loraloop.rewards import epochs, statements
from loraloop.rewards.onchain import RewardChain
from loraloop.web.community_views import number
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer

__all__ = ["router", "tokens"]

router = APIRouter(include_in_schema=False)
SIDES = ("community", "compute")


def tokens(amount: int) -> str:
    """Smallest units as whole tokens, as people read them: ``12.5``, ``1,000``, ``0.0001``."""
    value = Decimal(amount) / epochs.UNIT
    text = f"{value:,.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


@dataclass(frozen=True)
class Part:
    side: str
    points: str
    side_points: str
    side_pool: str
    tokens: str


@dataclass(frozen=True)
class LineView:
    line: statements.Line
    tokens: str
    parts: list[Part]
    payout_tokens: str | None


def _view(line: statements.Line) -> LineView:
    parts = []
    for side in SIDES:
        share: dict[str, Any] | None = line.breakdown.get(side)
        if share:
            parts.append(
                Part(
                    side=side,
                    points=number(int(share["points"]) / 1000),
                    side_points=number(int(share["side_points"]) / 1000),
                    side_pool=tokens(int(share["side_pool"])),
                    tokens=tokens(int(share["amount"])),
                )
            )
    return LineView(
        line=line,
        tokens=tokens(line.amount),
        parts=parts,
        payout_tokens=None if line.payout_amount is None else tokens(line.payout_amount),
    )


@router.get("/rewards", name="rewards_page")
def rewards_page(
    request: Request, viewer: PageViewer, db: AppDatabase, settings: AppSettings
) -> Response:
    """Your wallet, balance, open epoch and every epoch's tokens with Claim."""
    if viewer.user is None:
        return RedirectResponse("/signin", status_code=303)
    rewards: RewardChain = request.app.state.rewards
    with db.session() as session:
        history = [w.address for w in wallets.history(session, viewer.user)]
        try:
            found = statements.statement(session, settings, rewards, viewer.user)
            problem = None
        except (UpstreamFailed, ChainError) as exc:  # the page still says what is known
            found, problem = None, str(exc)
    context = {
        "active": "rewards",
        "statement": found,
        "chain_problem": problem,
        "lines": [_view(line) for line in found.lines] if found else [],
        "balance": tokens(found.balance) if found and found.balance is not None else None,
        "accruing": {k: number(v / 1000) for k, v in found.accruing.items()} if found else {},
        "history": history,
        "chain_id": settings.chain_id,
        "pool": f"{settings.reward_pool:,}",
        "compute_share": f"{settings.reward_compute_share:.0%}",
        "epoch_days": number(settings.reward_epoch_days),
    }
    return render(request, viewer, "rewards.html", context)
