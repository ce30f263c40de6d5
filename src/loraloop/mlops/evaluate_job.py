"""The ``evaluate`` job: score adapter versions on an adapter's suites, in the worker's child
(a trusted worker's, or a compute provider's node, whose answers the server then rescores and
spot-checks: :mod:`loraloop.providers.eval_work`).

Plain paths and cases in, per-case answers and scores out; no database. Each version answers
every case greedily; cases with a reference answer (held-out and corrections suites) are also
scored by the loss of that answer under the version. With a judge configured (an
OpenAI-compatible endpoint, its key in ``LORALOOP_JUDGE_API_KEY`` of the worker's
environment, never in the payload) and exactly two versions, each case is also judged
pairwise, challenger against champion.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest
from loraloop.ml import evaluation

__all__ = ["reference_losses", "run", "validate"]

_NEEDS = ("base_path", "versions", "suites")


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _NEEDS if k not in payload]
    if missing:
        raise InvalidRequest(f"evaluate job payload lacks {', '.join(missing)}", param="payload")
    if not payload["versions"]:
        raise InvalidRequest("name at least one adapter version to evaluate", param="versions")
    if not any(s["cases"] for s in payload["suites"]):
        raise InvalidRequest(
            "the adapter has no evaluation cases yet: add an owner suite, or train on a "
            "dataset with a validation split",
            code="no_eval_cases",
        )
    return payload


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from peft import PeftModel

    from loraloop.ml.models import ensure_default_base, load
    from loraloop.ml.safety import check_weights_file

    report({"event": "started", "pid": os.getpid()})
    if payload.get("base_default"):
        ensure_default_base(Path(payload["models_dir"]))
    max_new = int(payload.get("max_new_tokens", 64))
    suites = payload["suites"]
    total = sum(len(s["cases"]) for s in suites) * len(payload["versions"])
    done = 0
    results: dict[str, Any] = {}
    for entry in payload["versions"]:
        base, tokenizer = load(Path(payload["base_path"]))
        folder = Path(entry["path"])
        check_weights_file(folder / "adapter_model.safetensors")
        model = PeftModel.from_pretrained(base, folder)
        model.train(False)
        per_suite: dict[str, Any] = {}
        for suite in suites:
            cases = suite["cases"]
            answers = evaluation.generate(
                model, tokenizer, [c["messages"] for c in cases], max_new_tokens=max_new
            )
            scores = [
                evaluation.score(c["metric"], a, c["expected"])
                for c, a in zip(cases, answers, strict=True)
            ]
            losses = reference_losses(model, tokenizer, cases)
            per_suite[str(suite["id"])] = {
                "cases": [
                    {"id": c["id"], "answer": a, "score": s, "loss": loss}
                    for c, a, s, loss in zip(cases, answers, scores, losses, strict=True)
                ],
                "score": sum(scores) / len(scores) if scores else 0.0,
                "loss": _mean(losses),
                "perplexity": _perplexity(losses),
            }
            done += len(cases)
            report({"event": "progress", "done": done, "total": total, "version": entry["version"]})
        results[str(entry["id"])] = per_suite
        del model, base
    out: dict[str, Any] = {"versions": results}
    judge = payload.get("judge")
    if judge and len(payload["versions"]) == 2:
        out["judge"] = _judge(judge, suites, results, payload["versions"], report)
    return out


def reference_losses(model: Any, tokenizer: Any, cases: list[dict[str, Any]]) -> list[float | None]:
    """The loss of each case's reference answer (None where the case has none); the verifier
    of a provider's evaluation recomputes a sample of them with this same function."""
    with_reference = [
        i
        for i, c in enumerate(cases)
        if isinstance(c["expected"], str) and c["metric"] == "rouge_l"
    ]
    losses: list[float | None] = [None] * len(cases)
    if with_reference:
        conversations = [
            [*cases[i]["messages"], {"role": "assistant", "content": cases[i]["expected"]}]
            for i in with_reference
        ]
        for i, loss in zip(
            with_reference, evaluation.answer_losses(model, tokenizer, conversations), strict=True
        ):
            losses[i] = None if math.isnan(loss) else loss
    return losses


def _perplexity(losses: list[float | None]) -> float | None:
    real = [v for v in losses if v is not None]
    return evaluation.perplexity(real) if real else None


def _mean(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return sum(real) / len(real) if real else None


def _judge(
    judge: dict[str, Any],
    suites: list[dict[str, Any]],
    results: dict[str, Any],
    versions: list[dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> dict[str, list[float | None]]:
    """Challenger (second version) against champion (first), per case, by the judge model."""
    import httpx2 as httpx

    key = os.environ.get("LORALOOP_JUDGE_API_KEY", "")
    url = judge["base_url"].rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    champion, challenger = (str(v["id"]) for v in versions)

    def ask(messages: list[dict[str, str]]) -> str:
        response = httpx.post(
            url,
            json={"model": judge["model"], "messages": messages, "max_tokens": 8, "temperature": 0},
            headers=headers,
            timeout=float(judge.get("timeout", 60)),
        )
        response.raise_for_status()
        return str(response.json()["choices"][0]["message"]["content"])

    verdicts: dict[str, list[float | None]] = {}
    for suite in suites:
        sid = str(suite["id"])
        old, new = results[champion][sid]["cases"], results[challenger][sid]["cases"]
        verdicts[sid] = [
            evaluation.pairwise(
                case["messages"][-1]["content"],
                a["answer"],
                b["answer"],
                ask,
                reference=case["expected"] if isinstance(case["expected"], str) else None,
            )
            for case, a, b in zip(suite["cases"], old, new, strict=True)
        ]
        report({"event": "judged", "suite": suite["name"]})
    return verdicts
