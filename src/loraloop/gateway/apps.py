"""Apps: one model id in front of several deployments.

An app is a deployment of ``kind="app"`` whose ``app`` column holds its spec. Members name
other deployments of the same owner (adapters, bare bases, external services, other apps), so
apps compose: a router whose default member is a fallback chain, for example.

    {"type": "single",   "members": [{"deployment": "kumo"}]}
    {"type": "router",   "members": [{"deployment": "support", "description": "..."}, ...],
                         "rules": [{"member": "legal", "keywords": ["契約"], "regex": "...",
                                    "metadata": {"dept": "legal"}}],
                         "strategy": "shortest_first",
                         "semantic": {"threshold": 0.35}, "default": "general"}
    {"type": "fallback", "members": [{"deployment": "a", "timeout_seconds": 10},
                                     {"deployment": "b"}]}

plus, for any type, ``system_prompt`` and ``defaults`` (``temperature``, ``top_p``,
``max_tokens``: used when the request does not set them). A router tries its rules in order,
then its ``strategy`` (a named one a plugin adds, :func:`loraloop.ml.router.pick`), then
meaning, then ``default``. Meaning is a classifier fitted once per app on each member's
description and training inputs plus a built-in class of general requests
(:mod:`loraloop.ml.router`: character n-grams, and multilingual sentence embeddings when the
n-grams are unsure);
the most likely member answers when it is not the general class and its probability is at
least ``threshold``. A fallback chain tries its members in order when one fails, times out
before its first token, or answers nothing.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.tables import AdapterAlias, AdapterVersion, Deployment, Job, User
from loraloop.errors import Conflict, InvalidRequest
from loraloop.gateway.credentials import Vault
from loraloop.gateway.deployments import Step, Target
from loraloop.ml.router import Candidate, Decision, Router, StrategyFailed, pick, strategy_names

__all__ = ["TYPES", "Request", "members", "plan", "validate"]

log = logging.getLogger(__name__)

TYPES = ("single", "router", "fallback")
MAX_DEPTH = 4
MAX_MEMBERS = 16
_DEFAULTS = {"temperature": (0.0, 2.0), "top_p": (0.000001, 1.0), "max_tokens": (1, 32768)}
_PROTOTYPES = 64
"""Training inputs per member that the semantic router learns from."""
_ROUTERS = 32
"""Fitted routers kept in memory (least recently used dropped first)."""


# --- the spec ---------------------------------------------------------------------------


def validate(session: Session, owner: User, name: str, spec: Any) -> dict[str, Any]:
    """A clean copy of ``spec``; every problem at once. Members must be the owner's and the
    app may not contain itself (directly or through other apps)."""
    problems: list[str] = []
    if not isinstance(spec, dict):
        raise InvalidRequest("an app spec is a JSON object", code="invalid_app", param="app")
    kind = spec.get("type")
    if kind not in TYPES:
        problems.append(f"type {kind!r} must be one of {', '.join(TYPES)}")
    members = spec.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= MAX_MEMBERS:
        problems.append(f"members must be a list of 1 to {MAX_MEMBERS} deployments")
        members = []
    clean_members: list[dict[str, Any]] = []
    for number, member in enumerate(members, start=1):
        if not isinstance(member, dict) or not isinstance(member.get("deployment"), str):
            problems.append(f"member {number} needs 'deployment' (a deployment's name)")
            continue
        target = _deployment(session, owner, member["deployment"])
        if target is None:
            problems.append(
                f"member {number}: you have no deployment named {member['deployment']!r}"
            )
        elif _contains(session, owner, target, name, depth=0):
            problems.append(f"member {number}: {member['deployment']!r} leads back to {name!r}")
        clean: dict[str, Any] = {"deployment": member["deployment"]}
        clean["name"] = str(member.get("name") or member["deployment"])
        if "description" in member:
            clean["description"] = str(member["description"])[:2000]
        if member.get("timeout_seconds") is not None:
            timeout = member["timeout_seconds"]
            if not isinstance(timeout, int | float) or not 0 < timeout <= 600:
                problems.append(f"member {number}: timeout_seconds must be 0-600")
            else:
                clean["timeout_seconds"] = float(timeout)
        clean_members.append(clean)
    names = [m["name"] for m in clean_members]
    if len(set(names)) != len(names):
        problems.append("member names must differ (give 'name' to tell two apart)")
    out: dict[str, Any] = {"type": kind, "members": clean_members}
    if kind == "single" and len(clean_members) != 1:
        problems.append("a single app has exactly one member")
    if kind == "router":
        out.update(_router(spec, set(names), problems))
    if "system_prompt" in spec and spec["system_prompt"] is not None:
        out["system_prompt"] = str(spec["system_prompt"])[:20_000]
    out["defaults"] = _check_defaults(spec.get("defaults") or {}, problems)
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_app", param="app")
    return out


def _router(spec: dict[str, Any], names: set[str], problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    rules = spec.get("rules") or []
    clean_rules = []
    for number, rule in enumerate(rules if isinstance(rules, list) else [], start=1):
        if not isinstance(rule, dict) or rule.get("member") not in names:
            problems.append(f"rule {number} needs 'member', one of {', '.join(sorted(names))}")
            continue
        clean: dict[str, Any] = {"member": rule["member"]}
        keywords = rule.get("keywords") or []
        if not isinstance(keywords, list) or not all(isinstance(k, str) and k for k in keywords):
            problems.append(f"rule {number}: keywords must be a list of non-empty strings")
        elif keywords:
            clean["keywords"] = keywords
        if rule.get("regex"):
            try:
                re.compile(str(rule["regex"]))
                clean["regex"] = str(rule["regex"])[:500]
            except re.error as exc:
                problems.append(f"rule {number}: regex does not compile ({exc})")
        metadata = rule.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
        ):
            problems.append(f"rule {number}: metadata must map strings to strings")
        elif metadata:
            clean["metadata"] = metadata
        if len(clean) == 1:
            problems.append(f"rule {number} matches nothing: give keywords, regex or metadata")
        clean_rules.append(clean)
    out["rules"] = clean_rules
    strategy = spec.get("strategy")
    if strategy is not None:
        if strategy not in strategy_names():
            known = ", ".join(strategy_names()) or "none is installed"
            problems.append(f"strategy {strategy!r} is not one a plugin adds ({known})")
        else:
            out["strategy"] = strategy
    semantic = spec.get("semantic")
    if semantic is not None:
        threshold = semantic.get("threshold", 0.35) if isinstance(semantic, dict) else None
        if not isinstance(threshold, int | float) or not -1 <= threshold <= 1:
            problems.append("semantic.threshold must be a number between -1 and 1")
        else:
            out["semantic"] = {"threshold": float(threshold)}
    default = spec.get("default")
    if default not in names:
        problems.append(f"default must name a member ({', '.join(sorted(names))})")
    out["default"] = default
    return out


def _check_defaults(defaults: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(defaults, dict):
        problems.append("defaults must be an object")
        return {}
    clean = {}
    for key, value in defaults.items():
        if key not in _DEFAULTS:
            problems.append(f"defaults.{key} is not one of {', '.join(_DEFAULTS)}")
            continue
        low, high = _DEFAULTS[key]
        if not isinstance(value, int | float) or not low <= value <= high:
            problems.append(f"defaults.{key} must be between {low} and {high}")
            continue
        clean[key] = int(value) if key == "max_tokens" else float(value)
    return clean


def _deployment(session: Session, owner: User, name: str) -> Deployment | None:
    return session.scalar(
        select(Deployment).where(Deployment.owner_id == owner.id, Deployment.name == name)
    )


def _contains(session: Session, owner: User, row: Deployment, name: str, *, depth: int) -> bool:
    if row.name == name:
        return True
    if row.kind != "app" or not row.app or depth > MAX_DEPTH:
        return depth > MAX_DEPTH
    for member in row.app.get("members", []):
        inner = _deployment(session, owner, member["deployment"])
        if inner is not None and _contains(session, owner, inner, name, depth=depth + 1):
            return True
    return False


# --- routing a request ------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What routing may look at."""

    text: str
    metadata: dict[str, str]

    @classmethod
    def of(cls, call: Any) -> Request:
        """From a gateway ``Call``: its last user turn (or prompt) and metadata."""
        messages = call.messages or []
        text = next(
            (m["content"] for m in reversed(messages) if m.get("role") == "user"),
            call.prompt or "",
        )
        return cls(text, dict(call.metadata or {}))


def plan(
    session: Session,
    settings: Settings,
    vault: Vault,
    owner: User,
    row: Deployment,
    request: Request,
    *,
    depth: int = 0,
) -> list[Step]:
    """The members to try for ``request``, in order (one, unless a fallback chain)."""
    from loraloop.gateway import deployments

    assert row.app is not None
    spec = row.app
    members = {m["name"]: m for m in spec["members"]}
    if spec["type"] == "router":
        chosen, route = _route(session, settings, owner, spec, request)
        ordered = [(members[chosen], route)]
    else:
        ordered = [(m, {"by": spec["type"]}) for m in spec["members"]]
    steps: list[Step] = []
    for member, route in ordered:
        inner = _deployment(session, owner, member["deployment"])
        if inner is None:
            raise Conflict(
                f"member {member['name']!r} of app {row.name!r} names deployment "
                f"{member['deployment']!r}, which no longer exists; update the app",
                code="app_member_missing",
            )
        if inner.kind == "app" and depth < MAX_DEPTH:
            found = plan(session, settings, vault, owner, inner, request, depth=depth + 1)
        else:
            found = [Step(deployments.resolve(session, settings, vault, inner))]
        for step in found:
            here = {"member": member["name"], **route}
            if step.route:
                here["inner"] = step.route
            steps.append(
                Step(
                    _as_app(step.target, row, spec),
                    here,
                    member.get("timeout_seconds", step.timeout_seconds),
                    {**spec.get("defaults", {}), **step.defaults},
                )
            )
    return steps


def _as_app(target: Target, row: Deployment, spec: dict[str, Any]) -> Target:
    """The member's target, answering under the app's name and with its system prompt."""
    return replace(
        target,
        model=row.name,
        app_id=row.id,
        system_prompt=spec.get("system_prompt") or target.system_prompt,
    )


def _route(
    session: Session, settings: Settings, owner: User, spec: dict[str, Any], request: Request
) -> tuple[str, dict[str, Any]]:
    text = _normal(request.text)
    for number, rule in enumerate(spec.get("rules", []), start=1):
        hit = _matches(rule, text, request)
        if hit:
            return rule["member"], {"by": "rule", "rule": number, "matched": hit}
    passed: dict[str, Any] = {}
    if spec.get("strategy"):
        chosen, passed = _by_strategy(spec, request)
        if chosen is not None:
            return chosen, passed
    semantic = spec.get("semantic")
    if semantic is not None:
        decision = _meaning(session, owner, spec, request.text)
        if decision is not None:
            member, route = _meaning_route(decision, semantic["threshold"], spec["default"])
            return member, {**route, **passed}
    return spec["default"], {"by": "default", **passed}


def _by_strategy(spec: dict[str, Any], request: Request) -> tuple[str | None, dict[str, Any]]:
    """The member the app's strategy picks, or None and why not (for the trace's route): a
    strategy that passes, fails or is no longer installed leaves the rest of the router."""
    name = spec["strategy"]
    members = [Candidate(m["name"], m.get("description", "")) for m in spec["members"]]
    try:
        chosen = pick(name, request.text, members)
    except StrategyFailed as failure:
        log.warning("app router: %s; the request goes on to meaning and the default", failure)
        return None, {"strategy_error": str(failure)}
    if chosen is None:
        return None, {"strategy_passed": name}
    return chosen, {"by": "strategy", "strategy": name}


def _meaning_route(
    decision: Decision, threshold: float, default: str
) -> tuple[str, dict[str, Any]]:
    """The member and the trace's route for the semantic router's ``decision``: the score
    compared with ``threshold`` is ``similarity``, ``strategy`` says which model decided."""
    route: dict[str, Any] = {"similarity": round(decision.score, 4), "strategy": decision.strategy}
    if decision.cosine is not None:
        route["cosine"] = decision.cosine
    if decision.member is not None and decision.score >= threshold:
        return decision.member, {"by": "meaning", **route, "threshold": threshold}
    reason = "general request" if decision.member is None else "below threshold"
    return default, {"by": "default", "best": decision.best, **route, "reason": reason}


def _normal(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def _matches(rule: dict[str, Any], text: str, request: Request) -> str | None:
    for keyword in rule.get("keywords", []):
        if _normal(keyword) in text:
            return f"keyword {keyword}"
    if rule.get("regex") and re.search(rule["regex"], request.text):
        return f"regex {rule['regex']}"
    wanted = rule.get("metadata")
    if wanted and all(request.metadata.get(k) == v for k, v in wanted.items()):
        return "metadata " + ", ".join(f"{k}={v}" for k, v in wanted.items())
    return None


# --- meaning ------------------------------------------------------------------------------

_routers: OrderedDict[tuple[Any, ...], Router | None] = OrderedDict()
_routers_lock = threading.Lock()


def _meaning(session: Session, owner: User, spec: dict[str, Any], text: str) -> Decision | None:
    """The semantic router's decision for ``text``; None when no member has a description
    or training inputs."""
    from loraloop.ml.multilingual import load_multilingual

    router = _fitted_router(session, owner, spec)
    return router.route(text, load_multilingual().embed) if router is not None else None


def _fitted_router(session: Session, owner: User, spec: dict[str, Any]) -> Router | None:
    """The app's fitted router, cached per members' descriptions and serving versions (so
    moving a member's champion refits it on the next request)."""
    versions = _serving_versions(session, owner, spec["members"])
    key = tuple(
        (m["name"], m["deployment"], m.get("description", ""), versions[m["name"]])
        for m in spec["members"]
    )
    with _routers_lock:
        if key in _routers:
            _routers.move_to_end(key)
            return _routers[key]
    classes = {
        m["name"]: ([m["description"]] if m.get("description") else [])
        + _training_inputs(session, versions[m["name"]])
        for m in spec["members"]
    }
    router = Router.fit(classes) if any(classes.values()) else None
    with _routers_lock:
        _routers[key] = router
        while len(_routers) > _ROUTERS:
            _routers.popitem(last=False)
    return router


def _serving_versions(
    session: Session, owner: User, members: list[dict[str, Any]]
) -> dict[str, int | None]:
    """Per member name, the adapter version its deployment serves now (one query for all)."""
    query = (
        select(
            Deployment.name,
            Deployment.alias,
            Deployment.adapter_version_id,
            AdapterAlias.version_id,
        )
        .outerjoin(
            AdapterAlias,
            (AdapterAlias.adapter_id == Deployment.adapter_id)
            & (AdapterAlias.alias == Deployment.alias),
        )
        .where(
            Deployment.owner_id == owner.id,
            Deployment.name.in_({m["deployment"] for m in members}),
            Deployment.adapter_id.is_not(None),
        )
    )
    serving = {
        name: aliased if alias else pinned
        for name, alias, pinned, aliased in session.execute(query)
    }
    return {m["name"]: serving.get(m["deployment"]) for m in members}


def _training_inputs(session: Session, version_id: int | None) -> list[str]:
    from loraloop.ml.training import read_examples

    version = session.get(AdapterVersion, version_id) if version_id else None
    job = session.get(Job, version.job_id) if version and version.job_id else None
    if job is None or "train_file" not in job.payload:
        return []
    path = Path(job.payload["train_file"])
    if not path.exists():
        return []
    texts = [m["content"] for c in read_examples(path) for m in c if m["role"] == "user"]
    step = max(1, len(texts) // _PROTOTYPES)
    return texts[::step][:_PROTOTYPES]


# --- what the builder page shows ----------------------------------------------------------


def members(session: Session, owner: User, app_id: int, days: int = 7) -> list[dict[str, Any]]:
    """Per member deployment that answered for the app in the last ``days``: requests, failed
    attempts, tokens, mean latency, and the share of rated answers that were bad."""
    from datetime import timedelta

    from sqlalchemy import func

    from loraloop.db.engine import utcnow
    from loraloop.db.tables import Feedback, Trace
    from loraloop.gateway.deployments import get_own
    from loraloop.mlops.promotion import BAD

    app = get_own(session, owner, app_id)
    if app.kind != "app":
        raise InvalidRequest(f"deployment {app.name} is not an app", param="deployment_id")
    since = utcnow() - timedelta(days=days)
    rated = (
        select(Feedback.trace_id, func.max(BAD).label("bad")).group_by(Feedback.trace_id).subquery()
    )
    query = (
        select(
            Trace.deployment_id,
            Trace.status,
            func.count(Trace.id),
            func.sum(Trace.prompt_tokens + Trace.completion_tokens),
            func.avg(Trace.latency_ms),
            func.count(rated.c.trace_id),
            func.sum(rated.c.bad),
        )
        .outerjoin(rated, rated.c.trace_id == Trace.id)
        .where(Trace.app_id == app.id, Trace.created_at >= since)
        .group_by(Trace.deployment_id, Trace.status)
    )
    names = {
        d.id: d.name
        for d in session.scalars(select(Deployment).where(Deployment.owner_id == owner.id))
    }
    out: dict[int | None, dict[str, Any]] = {}
    for deployment_id, status, n, tokens, latency, n_rated, n_bad in session.execute(query):
        entry = out.setdefault(
            deployment_id,
            {
                "deployment": names.get(deployment_id or -1, "(deleted)"),
                "requests": 0,
                "failed": 0,
                "tokens": 0,
                "latency_ms": 0.0,
                "rated": 0,
                "bad": 0,
            },
        )
        if status == "error":
            entry["failed"] += n
        else:
            entry["latency_ms"] = (
                entry["latency_ms"] * entry["requests"] + float(latency or 0) * n
            ) / (entry["requests"] + n)
            entry["requests"] += n
        entry["tokens"] += int(tokens or 0)
        entry["rated"] += n_rated
        entry["bad"] += int(n_bad or 0)
    for entry in out.values():
        entry["bad_rate"] = entry["bad"] / entry["rated"] if entry["rated"] else None
        entry["latency_ms"] = round(entry["latency_ms"], 1)
    return sorted(out.values(), key=lambda e: -e["requests"])
