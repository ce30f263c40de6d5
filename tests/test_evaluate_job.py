"""The ``evaluate`` job's handler on a tiny model: answers, scores and losses per case, and the
pairwise judge called over real HTTP with the key from the worker's environment only."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request

from loraloop.errors import InvalidRequest
from loraloop.mlops import evaluate_job
from loraloop.testing import make_tiny_adapter, make_tiny_model
from tests.conftest import serve

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


def _judge(seen: list[dict[str, Any]]) -> FastAPI:
    """An OpenAI-compatible judge that always prefers the answer shown first."""
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        body = await request.json()
        seen.append({"auth": request.headers.get("authorization"), "body": body})
        message = {"role": "assistant", "content": "A"}
        return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    return app


def test_scores_losses_and_a_judge_that_cannot_be_fooled_by_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = make_tiny_model(tmp_path / "base")
    versions = [
        {"id": 11, "version": 1, "path": str(make_tiny_adapter(base, tmp_path / "v1", seed=1))},
        {"id": 12, "version": 2, "path": str(make_tiny_adapter(base, tmp_path / "v2", seed=2))},
    ]
    question = [{"role": "user", "content": "How much is the latte?"}]
    suites = [
        {
            "id": 1,
            "name": "heldout",
            "kind": "heldout",
            "metric": "rouge_l",
            "cases": [{"id": 5, "messages": question, "expected": "480 yen.", "metric": "rouge_l"}],
        },
        {
            "id": 2,
            "name": "prices",
            "kind": "owner",
            "metric": "contains",
            "cases": [{"id": 6, "messages": question, "expected": ["yen"], "metric": "contains"}],
        },
    ]
    seen: list[dict[str, Any]] = []
    monkeypatch.setenv("LORALOOP_JUDGE_API_KEY", "judge-secret")
    with serve(_judge(seen)) as url:
        payload = {
            "adapter_id": 1,
            "base_path": str(base),
            "versions": versions,
            "suites": suites,
            "max_new_tokens": 4,
            "judge": {"base_url": f"{url}/v1", "model": "judge-model"},
        }
        assert "judge-secret" not in str(evaluate_job.validate(payload))
        events: list[dict[str, Any]] = []
        result = evaluate_job.run(payload, events.append)

    for vid in ("11", "12"):
        held, owner = result["versions"][vid]["1"], result["versions"][vid]["2"]
        assert 0.0 <= held["score"] <= 1.0
        assert held["cases"][0]["loss"] > 0  # the reference answer's loss under this version
        assert math.isclose(held["perplexity"], math.exp(held["loss"]), rel_tol=1e-6)
        assert owner["cases"][0]["loss"] is None  # a contains case has no reference answer
        assert owner["score"] in (0.0, 1.0)
    # two versions, as different adapters: their losses differ
    assert result["versions"]["11"]["1"]["loss"] != result["versions"]["12"]["1"]["loss"]
    # asked twice per case with the answers swapped: a judge that always says "A" is a tie
    assert result["judge"] == {"1": [0.5], "2": [0.5]}
    assert len(seen) == 4
    assert {s["auth"] for s in seen} == {"Bearer judge-secret"}
    assert {s["body"]["model"] for s in seen} == {"judge-model"}
    assert [e["event"] for e in events][-1] == "judged"


def test_a_payload_without_cases_is_refused_with_what_to_do() -> None:
    with pytest.raises(InvalidRequest, match="no evaluation cases yet"):
        evaluate_job.validate(
            {"base_path": "x", "versions": [{"id": 1}], "suites": [{"id": 1, "cases": []}]}
        )
