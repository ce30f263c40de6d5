"""The ``verify_evaluate`` job: spot-check a provider's evaluation before it decides anything.
Runs on a trusted worker's child process with plain paths, no database.

- **Regeneration.** The sampled cases (drawn by the server after the node's result arrived)
  are answered again, greedily, by the same version with the same ``max_new_tokens``. Each
  answer must equal the node's (after strip); at most ``mismatch_share`` of them (rounded
  down) may differ, for float ties between machines.
- **Reference losses.** For sampled cases with a reference answer, its loss under the version
  is computed again and must be within ``loss_tolerance`` (relative) of the node's.
- **Measured work.** The tokens the evaluation processed, counted with the base's tokenizer:
  every case's prompt and the node's answer to it (at most ``max_new_tokens``), for each
  version; and the base's parameter count. Compute credit is paid on these.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loraloop.errors import InvalidRequest

__all__ = ["run", "validate"]

_NEEDS = ("base_path", "versions", "sample", "prompts", "answers", "max_new_tokens")
_QUOTED = 5
_QUOTE_CHARS = 200


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    missing = [k for k in _NEEDS if k not in payload]
    if missing:
        raise InvalidRequest(f"verify_evaluate payload lacks {', '.join(missing)}", param="payload")
    return payload


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from loraloop.ml.models import ensure_default_base, load

    report({"event": "started", "pid": os.getpid()})
    if payload.get("base_default"):
        ensure_default_base(Path(payload["models_dir"]))
    base, tokenizer = load(Path(payload["base_path"]))
    params = sum(p.numel() for p in base.parameters())
    del base
    max_new = int(payload["max_new_tokens"])
    tokens = _tokens(tokenizer, payload["prompts"], payload["answers"], max_new)
    checks: list[dict[str, Any]] = []
    for version in payload["versions"]:
        mine = [s for s in payload["sample"] if s["version_id"] == version["id"]]
        if mine:
            checks += _regenerate(payload, version, mine, max_new)
            report({"event": "progress", "version": version["id"], "checked": len(checks)})
    return _verdict(payload, checks, tokens, params)


def _tokens(tokenizer: Any, prompts: list[Any], answers: dict[str, list[str]], max_new: int) -> int:
    """Prompt tokens as generation saw them plus answer tokens (capped at what generation can
    produce, so padding an answer earns nothing), for every version."""
    prompt = sum(
        len(
            tokenizer(
                tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False),
                add_special_tokens=False,
            ).input_ids
        )
        for m in prompts
    )
    said = sum(
        min(max_new, len(tokenizer(a, add_special_tokens=False).input_ids)) if a else 0
        for per in answers.values()
        for a in per
    )
    return prompt * len(answers) + said


def _regenerate(
    payload: dict[str, Any], version: dict[str, Any], sample: list[dict[str, Any]], max_new: int
) -> list[dict[str, Any]]:
    """Answer the version's sampled cases again and recompute their reference losses."""
    from peft import PeftModel

    from loraloop.ml import evaluation
    from loraloop.ml.models import load
    from loraloop.ml.safety import check_weights_file
    from loraloop.mlops.evaluate_job import reference_losses

    base, tokenizer = load(Path(payload["base_path"]))
    folder = Path(version["path"])
    check_weights_file(folder / "adapter_model.safetensors")
    model = PeftModel.from_pretrained(base, folder)
    model.train(False)
    cases = [s["case"] for s in sample]
    answers = evaluation.generate(
        model, tokenizer, [c["messages"] for c in cases], max_new_tokens=max_new
    )
    losses = reference_losses(model, tokenizer, cases)
    del model, base
    tolerance = float(payload.get("loss_tolerance", 0.02))
    return [
        {
            "version_id": s["version_id"],
            "suite_id": s["suite_id"],
            "case_id": s["case"]["id"],
            "node": s["answer"],
            "verifier": answer,
            "agrees": s["answer"].strip() == answer.strip(),
            "node_loss": s["loss"],
            "loss": loss,
            "loss_gap": _gap(s["loss"], loss),
            "loss_agrees": _gap(s["loss"], loss) <= tolerance,
        }
        for s, answer, loss in zip(sample, answers, losses, strict=True)
    ]


def _gap(reported: float | None, loss: float | None) -> float:
    """Relative gap between the node's loss and the verifier's (inf: one has none)."""
    if reported is None and loss is None:
        return 0.0
    if reported is None or loss is None:
        return math.inf
    return abs(reported - loss) / max(abs(loss), 1e-6)


def _verdict(
    payload: dict[str, Any], checks: list[dict[str, Any]], tokens: int, params: int
) -> dict[str, Any]:
    share = float(payload.get("mismatch_share", 0.10))
    tolerance = float(payload.get("loss_tolerance", 0.02))
    sampled = len(checks)
    agreed = sum(c["agrees"] for c in checks)
    allowed = math.floor(share * sampled)
    with_loss = [c for c in checks if c["node_loss"] is not None or c["loss"] is not None]
    bad_losses = [c for c in with_loss if not c["loss_agrees"]]
    gaps = [c["loss_gap"] for c in with_loss if math.isfinite(c["loss_gap"])]
    problems = []
    if sampled - agreed > allowed:
        problems.append(
            f"{sampled - agreed} of {sampled} sampled answers differ from the verifier's "
            f"(at most {allowed} may): the answers are not what the adapter says"
        )
    if bad_losses:
        problems.append(
            f"{len(bad_losses)} of {len(with_loss)} reference losses are more than "
            f"{tolerance:.0%} off the verifier's"
        )
    figures = (
        f"{agreed} of {sampled} sampled answers agree; "
        f"{len(with_loss) - len(bad_losses)} of {len(with_loss)} losses within {tolerance:.0%}"
    )
    disagreements = [
        {
            **{k: c[k] for k in ("version_id", "suite_id", "case_id", "node_loss", "loss")},
            "node": str(c["node"])[:_QUOTE_CHARS],
            "verifier": str(c["verifier"])[:_QUOTE_CHARS],
        }
        for c in checks
        if not (c["agrees"] and c["loss_agrees"])
    ][:_QUOTED]
    return {
        "passed": not problems,
        "reason": "; ".join(problems) if problems else figures,
        "work": "evaluation",
        "sampled": sampled,
        "agreed": agreed,
        "agreement": round(agreed / sampled, 4) if sampled else None,
        "mismatches_allowed": allowed,
        "losses_checked": len(with_loss),
        "losses_agreed": len(with_loss) - len(bad_losses),
        "largest_loss_gap": round(max(gaps), 8) if gaps else None,
        "loss_tolerance": tolerance,
        "disagreements": disagreements,
        "tokens": tokens,
        "params": params,
    }
