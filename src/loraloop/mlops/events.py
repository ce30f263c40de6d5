"""What the maintenance loop announces to services built on it, without importing them.

``candidate_pending`` (a correction by someone other than the adapter's owner awaits a
decision), ``candidate_decided`` (the owner decided a candidate directly) and ``promoted``
(a version became champion, with the decision that did it) and ``tick`` (the maintenance
loop's periodic pass, with settings and storage). Handlers run in the publishing
transaction. The services that listen are named in ``_LISTENERS`` and imported on the first
publish, so every process that can publish (server, CLI, tests) has the same handlers.
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

__all__ = ["EVENTS", "publish", "subscribe"]

EVENTS = ("candidate_pending", "candidate_decided", "promoted", "tick")
_LISTENERS = ("loraloop.contributions.hooks",)
_handlers: dict[str, list[Callable[..., None]]] = defaultdict(list)
_loaded = False


def subscribe(event: str, handler: Callable[..., None]) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r}")
    if handler not in _handlers[event]:
        _handlers[event].append(handler)


def publish(event: str, session: Session, **payload: Any) -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in _LISTENERS:
            importlib.import_module(name)
    for handler in _handlers[event]:
        handler(session, **payload)
