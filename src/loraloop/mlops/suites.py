"""Evaluation suites of an adapter and their cases.

Kinds: ``heldout`` (made from the training dataset's validation split: the reference answer,
scored by ROUGE-L), ``owner`` (cases the owner writes, with any metric), ``corrections``
(held-out user corrections) and ``community`` (accepted community eval cases).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.db.tables import DatasetVersion, EvalCase, EvalSuite, TrainingCandidate, User
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.ml import evaluation

__all__ = [
    "HELDOUT_CASES",
    "KINDS",
    "add_cases",
    "add_community_case",
    "add_correction_case",
    "cases_payload",
    "create",
    "ensure_heldout",
    "list_for",
    "parse_case",
]

KINDS = ("heldout", "owner", "corrections", "community")
HELDOUT_CASES = 64
"""At most this many validation conversations become the held-out suite (the first ones)."""
MAX_CASES = 2000


def _suite(session: Session, adapter_id: int, name: str, kind: str, metric: str) -> EvalSuite:
    found = session.scalar(
        select(EvalSuite).where(EvalSuite.adapter_id == adapter_id, EvalSuite.name == name)
    )
    if found is None:
        found = EvalSuite(adapter_id=adapter_id, name=name, kind=kind, metric=metric)
        session.add(found)
        session.flush()
    return found


def create(
    session: Session, user: User, adapter_id: int, *, name: str, metric: str = "contains"
) -> EvalSuite:
    """A new owner-written suite on your adapter."""
    adapters.get_own(session, user, adapter_id)
    if metric not in evaluation.metric_names():
        raise InvalidRequest(
            f"metric {metric!r} must be one of {', '.join(evaluation.metric_names())}",
            param="metric",
        )
    name = name.strip()
    if not 1 <= len(name) <= 64:
        raise InvalidRequest("a suite name has 1-64 characters", param="name")
    if session.scalar(
        select(EvalSuite.id).where(EvalSuite.adapter_id == adapter_id, EvalSuite.name == name)
    ):
        raise Conflict(
            f"adapter {adapter_id} already has a suite named {name}", code="suite_exists"
        )
    return _suite(session, adapter_id, name, "owner", metric)


def _get_own(session: Session, user: User, suite_id: int) -> EvalSuite:
    suite = session.get(EvalSuite, suite_id)
    if suite is None:
        raise NotFound(f"suite {suite_id} not found", param="suite_id")
    adapters.get_own(session, user, suite.adapter_id)
    return suite


def add_cases(
    session: Session, user: User, suite_id: int, cases: list[dict[str, Any]]
) -> list[EvalCase]:
    """Add owner-written cases; every problem is reported at once with the case's number."""
    suite = _get_own(session, user, suite_id)
    if suite.kind != "owner":
        raise InvalidRequest(f"suite {suite.name} is filled by loraloop ({suite.kind})")
    problems: list[str] = []
    rows: list[EvalCase] = []
    for number, case in enumerate(cases, start=1):
        try:
            rows.append(_owner_case(suite, case))
        except InvalidRequest as exc:
            problems.append(f"case {number}: {exc.message}")
    if problems:
        raise InvalidRequest("; ".join(problems[:10]), code="invalid_cases")
    held = session.scalar(select(func.count()).where(EvalCase.suite_id == suite.id)) or 0
    if held + len(rows) > MAX_CASES:
        raise InvalidRequest(f"a suite holds at most {MAX_CASES} cases", param="cases")
    session.add_all(rows)
    session.flush()
    return rows


def _owner_case(suite: EvalSuite, case: dict[str, Any]) -> EvalCase:
    messages, expected, metric = parse_case(case, suite.metric)
    return EvalCase(
        suite_id=suite.id, messages=messages, expected=expected, metric=metric, source="owner"
    )


def parse_case(case: dict[str, Any], default_metric: str) -> tuple[list[dict[str, str]], Any, str]:
    """(messages, expected, metric) of a case given as ``prompt`` or ``messages`` ending with
    a user turn, an ``expected`` answer and an optional ``metric``; InvalidRequest if wrong."""
    messages = case.get("messages")
    if messages is None and isinstance(case.get("prompt"), str):
        messages = [{"role": "user", "content": case["prompt"]}]
    if (
        not isinstance(messages, list)
        or not messages
        or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role")
            for m in messages
        )
        or messages[-1].get("role") != "user"
    ):
        raise InvalidRequest("give 'prompt' or 'messages' ending with a user turn")
    metric = case.get("metric") or default_metric
    evaluation.check_case(metric, case.get("expected"))
    return (
        [{"role": m["role"], "content": m["content"]} for m in messages],
        case["expected"],
        metric,
    )


def ensure_heldout(
    session: Session, adapter_id: int, data: DatasetVersion, validation: str | Path
) -> EvalSuite:
    """The held-out suite from the dataset version's validation split file (made once)."""
    name = f"heldout-{data.content_hash[:8]}"
    suite = _suite(session, adapter_id, name, "heldout", "rouge_l")
    if session.scalar(select(EvalCase.id).where(EvalCase.suite_id == suite.id).limit(1)):
        return suite
    added = 0
    with Path(validation).open(encoding="utf-8") as handle:
        for line in handle:
            if added >= HELDOUT_CASES:
                break
            messages = json.loads(line)["messages"] if line.strip() else []
            answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
            if not answers or answers[-1] == 0:
                continue
            last = answers[-1]
            session.add(
                EvalCase(
                    suite_id=suite.id,
                    messages=messages[:last],
                    expected=messages[last]["content"],
                    metric="rouge_l",
                    source="heldout",
                )
            )
            added += 1
    session.flush()
    return suite


def add_correction_case(session: Session, candidate: TrainingCandidate) -> EvalCase:
    """An accepted held-out correction joins the adapter's ``corrections`` suite."""
    suite = _suite(session, candidate.adapter_id, "corrections", "corrections", "rouge_l")
    *asked, answer = candidate.messages
    row = EvalCase(
        suite_id=suite.id,
        messages=asked,
        expected=answer["content"],
        metric="rouge_l",
        source="correction",
        candidate_id=candidate.id,
    )
    session.add(row)
    session.flush()
    return row


def add_community_case(
    session: Session, adapter_id: int, messages: list[dict[str, str]], expected: Any, metric: str
) -> EvalCase:
    """An accepted community eval case joins the adapter's ``community`` suite."""
    suite = _suite(session, adapter_id, "community", "community", metric)
    row = EvalCase(
        suite_id=suite.id, messages=messages, expected=expected, metric=metric, source="community"
    )
    session.add(row)
    session.flush()
    return row


def list_for(session: Session, user: User, adapter_id: int) -> list[tuple[EvalSuite, int]]:
    """Your adapter's suites with their case counts."""
    adapters.get_own(session, user, adapter_id)
    rows = session.execute(
        select(EvalSuite, func.count(EvalCase.id))
        .outerjoin(EvalCase, EvalCase.suite_id == EvalSuite.id)
        .where(EvalSuite.adapter_id == adapter_id)
        .group_by(EvalSuite.id)
        .order_by(EvalSuite.id)
    )
    return [(suite, count) for suite, count in rows]


def cases_payload(session: Session, adapter_id: int) -> list[dict[str, Any]]:
    """Every non-empty suite of the adapter with its cases, as the evaluate job takes them."""
    out = []
    for suite in session.scalars(
        select(EvalSuite).where(EvalSuite.adapter_id == adapter_id).order_by(EvalSuite.id)
    ):
        cases = session.scalars(
            select(EvalCase).where(EvalCase.suite_id == suite.id).order_by(EvalCase.id)
        )
        listed = [
            {"id": c.id, "messages": c.messages, "expected": c.expected, "metric": c.metric}
            for c in cases
        ]
        if listed:
            out.append(
                {
                    "id": suite.id,
                    "name": suite.name,
                    "kind": suite.kind,
                    "metric": suite.metric,
                    "cases": listed,
                }
            )
    return out
