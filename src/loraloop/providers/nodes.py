"""Provider nodes: a machine registered with a provider key (anyone's) or a worker key (an
admin's: trusted), what it reports it can run, and how reliable its work has proved."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.db.engine import utcnow
from loraloop.db.tables import ApiKey, ProviderNode, User
from loraloop.errors import InvalidRequest, NotFound

__all__ = ["fits", "mine", "patience", "register", "reliability", "seen"]

_CAPABILITY_BYTES = 4096


def _check(name: str, capabilities: dict[str, Any]) -> None:
    problems = []
    if not 1 <= len(name.strip()) <= 80:
        problems.append("name must be 1 to 80 characters")
    if len(json.dumps(capabilities)) > _CAPABILITY_BYTES:
        problems.append(f"capabilities must be at most {_CAPABILITY_BYTES} bytes of JSON")
    for key, kind in (("cpu_count", int), ("memory_gb", (int, float))):
        if not isinstance(capabilities.get(key), kind) or capabilities[key] <= 0:
            problems.append(f"capabilities.{key} must be a positive number")
    gpus = capabilities.get("gpus", [])
    if not isinstance(gpus, list) or not all(
        isinstance(g, dict) and isinstance(g.get("memory_gb"), (int, float)) for g in gpus
    ):
        problems.append("capabilities.gpus must be a list of {name, memory_gb}")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_node")


def register(
    session: Session,
    user: User,
    key: ApiKey,
    *,
    name: str,
    capabilities: dict[str, Any],
    trusted: bool,
) -> ProviderNode:
    """Register (or re-register after a restart: same owner and name) a node."""
    _check(name, capabilities)
    node = session.scalar(
        select(ProviderNode).where(ProviderNode.owner_id == user.id, ProviderNode.name == name)
    )
    if node is None:
        node = ProviderNode(owner_id=user.id, name=name.strip(), capabilities=capabilities)
        session.add(node)
    node.key_id, node.capabilities, node.trusted = key.id, capabilities, trusted
    node.last_seen_at = utcnow()
    session.flush()
    return node


def seen(session: Session, user: User, node_id: int) -> ProviderNode:
    """The caller's node (others' get "not found"), marked as seen now."""
    node = session.get(ProviderNode, node_id)
    if node is None or node.owner_id != user.id:
        raise NotFound(f"node {node_id} not found; register it first", param="node_id")
    node.last_seen_at = utcnow()
    return node


def mine(session: Session, user: User) -> list[ProviderNode]:
    query = select(ProviderNode).where(ProviderNode.owner_id == user.id)
    return list(session.scalars(query.order_by(ProviderNode.id)))


def reliability(node: ProviderNode) -> float:
    """Share of its work that held up (verified, not lost), with one success and one failure
    assumed up front: a new node starts at 0.5."""
    return (node.verified_ok + 1) / (node.verified_ok + node.verified_bad + node.lost + 2)


#: The longest a queued job waits for a more reliable node than a failing one.
PREFERENCE_SECONDS = 30.0


def patience(node: ProviderNode) -> float:
    """Seconds a queued job must wait before this node may take it: none for a node at least
    as reliable as a new one, up to ``PREFERENCE_SECONDS`` for one whose work keeps failing,
    so reliable nodes get the work first."""
    return max(0.0, 0.5 - reliability(node)) * 2 * PREFERENCE_SECONDS


def fits(node: ProviderNode, job_payload: dict[str, Any]) -> bool:
    """Whether the node can run the job: QLoRA needs a CUDA GPU."""
    spec = job_payload.get("spec") or {}
    gpus = node.capabilities.get("gpus") or []
    return not spec.get("qlora") or bool(gpus and node.capabilities.get("cuda"))
