"""Job states and the only transitions allowed between them.

::

    queued ──claim──▶ leased ──start──▶ running ──complete──▶ succeeded
      ▲  │              │  │               │  │
      │  └──cancel──┐   │  └─fail/reap─┐   │  └──fail──▶ failed
      └──reap/retry─┼───┴──────────────┼───┘
                    ▼                  ▼
                cancelled            failed        (failed|cancelled ──retry──▶ queued)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ACTIVE", "OPERATIONS", "TERMINAL", "Status"]


class Status(StrEnum):
    queued = "queued"
    leased = "leased"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE = (Status.leased, Status.running)
TERMINAL = (Status.succeeded, Status.failed, Status.cancelled)

#: operation -> (states it may start from, state(s) it leads to)
OPERATIONS: dict[str, tuple[tuple[Status, ...], tuple[Status, ...]]] = {
    "claim": ((Status.queued,), (Status.leased,)),
    "start": ((Status.leased,), (Status.running,)),
    "heartbeat": (ACTIVE, ACTIVE),
    "complete": ((Status.running,), (Status.succeeded,)),
    "hand_over": ((Status.running,), (Status.running,)),
    "fail": (ACTIVE, (Status.failed, Status.queued)),
    "reap": (ACTIVE, (Status.queued, Status.failed)),
    "cancel": ((Status.queued, *ACTIVE), (Status.cancelled,)),
    "retry": ((Status.failed, Status.cancelled), (Status.queued,)),
}
