"""Evaluation work on a provider node: which ``evaluate`` jobs may leave the trusted workers,
what the node is given, and the checks its answers pass before they count.

An evaluation decides promotions, so a node's result is checked twice::

    node: answers, scores, losses ──complete──▶ server rescores every answer     (layer a)
                                                  │ any disagreement: rejected at once
                                                  ▼
                                 the sample is drawn now ──▶ verify_evaluate     (layer b)
                                 (a trusted worker regenerates those answers greedily and
                                  recomputes their reference losses)
                                                  │ pass: the held job completes with the
                                                  ▼ server's scores, the gate records them

Layer (a) catches a node that inflates its scores: scoring is a pure function of the answer,
so the server's number is the truth. Layer (b) catches a node whose scores are consistent
with answers it made up (copied from the expected answers, say): generation is the work, and
only redoing some of it tells. Nothing here touches the database: :mod:`work` moves the rows.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loraloop.ml import evaluation
from loraloop.storage import sha256_file

__all__ = [
    "ANSWER_MISMATCH_SHARE",
    "LOSS_TOLERANCE",
    "SAMPLE_MAX",
    "SAMPLE_MIN",
    "SAMPLE_SHARE",
    "VERSION_FILES",
    "Rescored",
    "draw",
    "inputs",
    "open_to_providers",
    "rescore",
    "verify_payload",
    "version_file",
]

VERSION_FILES = ("adapter_model.safetensors", "adapter_config.json")
"""Each evaluated version's PEFT files, served as ``version/{id}/{name}`` (never a path)."""
SAMPLE_SHARE = 0.10
"""Share of each version's cases of each suite the verifier regenerates..."""
SAMPLE_MIN = 3
"""...but at least this many (or all, for a smaller suite)..."""
SAMPLE_MAX = 20
"""...and at most this many in all: about one evaluation batch of generation on the verifier,
a small fraction of the node's work for any real suite."""
ANSWER_MISMATCH_SHARE = 0.10
"""Largest share of sampled answers (rounded down) that may differ from the verifier's. Greedy
decoding is deterministic on one machine, but another CPU's kernels sum in another order, and
where the two best next tokens are within that rounding (~1e-6 relative in fp32) the answers
part ways; this absorbs such ties. With at most 20 sampled, that is at most 2 answers. (On
SmolLM2-135M in fp32, 40 answers agreed across batching and thread counts, the closest top-2
logit gap along them 0.005: such ties are rare; see docs/providers.md.)"""
LOSS_TOLERANCE = 0.02
"""Largest relative gap between a node's reference-answer loss and the verifier's. Batch
composition and kernels move an fp32 loss by ~1e-6; a faked loss is off by far more."""
SCORE_TOLERANCE = 1e-9
"""Scores and means are computed by the same Python on both sides: equal but for float
printing, so any larger gap is a reported number that is not what the answer earns."""
MAX_ANSWER_CHARS = 64 * 1024
_REPORTED = 5
"""Disagreements quoted in a verdict (the count covers all of them)."""


def _cases(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for s in payload.get("suites") or [] for c in s["cases"]]


def open_to_providers(payload: dict[str, Any]) -> bool:
    """Whether an untrusted node may run this evaluation: the owner opted into community
    compute, no judge is configured (its key never leaves trusted workers), and every case
    uses a built-in metric (a plugin's metric may not be installed on the node, and the server
    must be able to rescore the node's answers the same way)."""
    if not payload.get("remote_ok") or payload.get("judge") or not payload.get("versions"):
        return False
    cases = _cases(payload)
    return bool(cases) and all(c["metric"] in evaluation.METRICS for c in cases)


def inputs(
    payload: dict[str, Any], files: dict[str, dict[str, Any]], base: dict[str, Any]
) -> dict[str, Any]:
    """What a node runs: the cases (the owner consented), the base by hash (``files`` and
    ``base`` as for training) and each version's adapter files by hash; no server paths."""
    listed = dict(files)
    for version in payload["versions"]:
        folder = Path(version["path"])
        for name in VERSION_FILES:
            path = folder / name
            listed[f"version/{version['id']}/{name}"] = {
                "sha256": sha256_file(path),
                "size": path.stat().st_size,
            }
    return {
        "adapter_id": payload.get("adapter_id"),
        "versions": [{"id": v["id"], "version": v["version"]} for v in payload["versions"]],
        "suites": payload["suites"],
        "max_new_tokens": payload.get("max_new_tokens", 64),
        "base": base,
        "files": listed,
    }


def version_file(payload: dict[str, Any], name: str) -> Path | None:
    """The file behind an input name ``version/{id}/{file}``, or None."""
    parts = name.split("/")
    if len(parts) != 3 or parts[0] != "version" or parts[2] not in VERSION_FILES:
        return None
    for version in payload.get("versions") or []:
        if str(version["id"]) == parts[1]:
            return Path(version["path"]) / parts[2]
    return None


# layer (a): rescoring at complete ------------------------------------------------------------


@dataclass
class Rescored:
    """A node's evaluation result as the server rebuilt it from the node's answers."""

    result: dict[str, Any]
    """``{"versions": {vid: {sid: {cases, score, loss, perplexity}}}}`` with the server's
    scores, the shape ``gate.evaluation_succeeded`` records."""
    cases: int = 0
    """Answers rescored."""
    problems: list[str] = field(default_factory=list)
    """Each disagreement with what the node reported, in words."""
    claimed: dict[str, Any] = field(default_factory=dict)
    """The node's own suite means, kept with the work."""


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _differs(reported: Any, actual: float | None) -> bool:
    if actual is None:
        return reported is not None
    value = _number(reported)
    if value is None:
        return True
    if math.isinf(actual) or math.isinf(value):
        return value != actual
    return not math.isclose(value, actual, rel_tol=SCORE_TOLERANCE, abs_tol=SCORE_TOLERANCE)


def _case_losses(
    where: str, cases: list[dict[str, Any]], said: list[Any], problems: list[str]
) -> list[float | None]:
    losses: list[float | None] = []
    for case, row in zip(cases, said, strict=True):
        loss = row.get("loss")
        value = _number(loss)
        if loss is not None and (value is None or not math.isfinite(value) or value < 0):
            problems.append(f"{where}, case {case['id']}: the loss {loss!r} is not a loss")
            value = None
        if value is not None and not _has_reference(case):
            problems.append(f"{where}, case {case['id']}: a loss for a case without a reference")
        losses.append(value)
    return losses


def _has_reference(case: dict[str, Any]) -> bool:
    """Whether ``evaluate_job`` scores the case by its reference answer's loss as well."""
    return isinstance(case["expected"], str) and case["metric"] == "rouge_l"


def _suite(
    where: str, suite: dict[str, Any], reported: Any, problems: list[str]
) -> tuple[dict[str, Any], int]:
    cases = suite["cases"]
    said = reported.get("cases") if isinstance(reported, dict) else None
    ids = [r.get("id") if isinstance(r, dict) else None for r in said or []]
    if not isinstance(said, list) or ids != [c["id"] for c in cases]:
        problems.append(f"{where}: the cases reported are not the suite's {len(cases)}, in order")
        return {}, 0
    rows, scores = [], []
    for case, row in zip(cases, said, strict=True):
        answer = row.get("answer")
        if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
            problems.append(f"{where}, case {case['id']}: the answer is not a text")
            answer = ""
        score = evaluation.score(case["metric"], answer, case["expected"])
        if _differs(row.get("score"), score):
            problems.append(
                f"{where}, case {case['id']}: reported score {row.get('score')!r}, "
                f"the answer earns {score:.4f}"
            )
        scores.append(score)
        rows.append({"id": case["id"], "answer": answer, "score": score})
    losses = _case_losses(where, cases, said, problems)
    for row, loss in zip(rows, losses, strict=True):
        row["loss"] = loss
    real = [v for v in losses if v is not None]
    rebuilt: dict[str, Any] = {
        "cases": rows,
        "score": sum(scores) / len(scores) if scores else 0.0,
        "loss": sum(real) / len(real) if real else None,
        "perplexity": evaluation.perplexity(real) if real else None,
    }
    for key in ("score", "loss", "perplexity"):
        if _differs(reported.get(key), rebuilt[key]):
            problems.append(
                f"{where}: reported {key} {reported.get(key)!r}, its cases give {rebuilt[key]!r}"
            )
    return rebuilt, len(rows)


def rescore(payload: dict[str, Any], result: dict[str, Any]) -> Rescored:
    """Score every answer the node reported, as ``evaluate_job`` does, and recompute each
    suite's means; every number the node reported must be what its answers give."""
    out = Rescored(result={"versions": {}})
    reported = result.get("versions")
    if not isinstance(reported, dict):
        out.problems.append("the result names no versions")
        return out
    wanted = {str(v["id"]) for v in payload["versions"]}
    if set(reported) != wanted:
        out.problems.append(f"the result covers versions {sorted(reported)}, not {sorted(wanted)}")
    if result.get("judge") is not None:
        out.problems.append("the result holds a judge's verdicts, but no judge was asked")
    for vid in sorted(wanted & set(reported)):
        per_suite = reported[vid] if isinstance(reported[vid], dict) else {}
        rebuilt: dict[str, Any] = {}
        for suite in payload["suites"]:
            sid, where = str(suite["id"]), f"version {vid}, suite {suite['name']}"
            if sid not in per_suite:
                out.problems.append(f"{where}: not reported")
                continue
            rebuilt[sid], n = _suite(where, suite, per_suite[sid], out.problems)
            out.cases += n
            said = per_suite[sid] if isinstance(per_suite[sid], dict) else {}
            out.claimed.setdefault(vid, {})[sid] = {
                k: said.get(k) for k in ("score", "loss", "perplexity")
            }
        out.result["versions"][vid] = rebuilt
    return out


# layer (b): the spot check -------------------------------------------------------------------


def _quotas(sizes: list[int]) -> list[int]:
    """Per group ``max(SAMPLE_MIN, SAMPLE_SHARE of it)`` cases, the total cut to ``SAMPLE_MAX``
    by handing places out one group at a time, so every group keeps some while places last."""
    wanted = [min(n, max(SAMPLE_MIN, math.ceil(SAMPLE_SHARE * n))) for n in sizes]
    if sum(wanted) <= SAMPLE_MAX:
        return wanted
    given = [0] * len(sizes)
    while sum(given) < SAMPLE_MAX:
        for i, limit in enumerate(wanted):
            if given[i] < limit and sum(given) < SAMPLE_MAX:
                given[i] += 1
    return given


def draw(payload: dict[str, Any], rescored: dict[str, Any]) -> list[dict[str, Any]]:
    """The cases to regenerate, per version and suite, drawn with the system's randomness
    only now that the node has committed to every answer."""
    rng = secrets.SystemRandom()
    groups = [
        (vid, suite)
        for vid in sorted(rescored["versions"], key=int)
        for suite in payload["suites"]
        if suite["cases"]
    ]
    sample = []
    for (vid, suite), k in zip(groups, _quotas([len(s["cases"]) for _, s in groups]), strict=True):
        reported = rescored["versions"][vid][str(suite["id"])]["cases"]
        for i in sorted(rng.sample(range(len(suite["cases"])), k)):
            sample.append(
                {
                    "version_id": int(vid),
                    "suite_id": suite["id"],
                    "case": suite["cases"][i],
                    "answer": reported[i]["answer"],
                    "loss": reported[i]["loss"],
                }
            )
    return sample


def verify_payload(
    payload: dict[str, Any],
    rescored: dict[str, Any],
    sample: list[dict[str, Any]],
    *,
    job_id: int,
    hold_token: str,
    work_id: int,
) -> dict[str, Any]:
    """What ``verify_evaluate`` needs: the server's paths (it runs on a trusted worker), the
    sample with the node's answers, and every answer, whose tokens it counts for the credit."""
    return {
        "job_id": job_id,
        "hold_token": hold_token,
        "work_id": work_id,
        "base_path": payload["base_path"],
        "base_default": payload.get("base_default", False),
        "models_dir": payload.get("models_dir"),
        "versions": [{"id": v["id"], "path": v["path"]} for v in payload["versions"]],
        "max_new_tokens": payload.get("max_new_tokens", 64),
        "sample": sample,
        "prompts": [c["messages"] for c in _cases(payload)],
        "answers": {
            vid: [c["answer"] for s in payload["suites"] for c in per[str(s["id"])]["cases"]]
            for vid, per in rescored["versions"].items()
        },
        "mismatch_share": ANSWER_MISMATCH_SHARE,
        "loss_tolerance": LOSS_TOLERANCE,
    }
