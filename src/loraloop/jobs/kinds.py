"""Registered job kinds: what runs in the worker's subprocess for each ``kind``.

Each kind names a module holding ``validate(payload) -> payload`` (run on the server when the
job is enqueued) and ``run(payload, report) -> result`` (run in the worker's child process).
Modules are named by dotted path so the child imports only what it needs.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loraloop.errors import InvalidRequest

__all__ = ["KINDS", "Handler", "JobKind", "get", "load_handler", "success_hook", "validate_payload"]

Handler = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    name: str
    module: str
    """Dotted module path holding ``validate`` and ``run``."""
    submittable: bool
    """Whether users may enqueue it directly through ``POST /api/jobs``."""
    description: str
    on_success: str | None = None
    """``module:function(session, job)`` run in the completing transaction (records results);
    if it raises, the completion is refused and the job fails with its message."""


KINDS: dict[str, JobKind] = {
    kind.name: kind
    for kind in [
        JobKind(
            "selftest",
            "loraloop.jobs.selftest",
            submittable=True,
            description="Checks the worker: reports progress for a number of steps.",
        ),
        JobKind(
            "train",
            "loraloop.catalog.training_job",
            submittable=False,
            description="Trains a LoRA adapter version (start it from the adapter).",
            on_success="loraloop.mlops.policy:train_succeeded",
        ),
        JobKind(
            "evaluate",
            "loraloop.mlops.evaluate_job",
            submittable=False,
            description="Scores adapter versions on the adapter's evaluation suites.",
            on_success="loraloop.mlops.gate:evaluation_succeeded",
        ),
        JobKind(
            "train_check",
            "loraloop.catalog.training_job",
            submittable=False,
            description="Trains a probationary provider's job again elsewhere to confirm it.",
            on_success="loraloop.providers.work:confirmed",
        ),
        JobKind(
            "verify_train",
            "loraloop.providers.verify_job",
            submittable=False,
            description="Checks a compute provider's adapter on held-out data before it counts.",
            on_success="loraloop.providers.work:verified",
        ),
        JobKind(
            "verify_evaluate",
            "loraloop.providers.verify_eval_job",
            submittable=False,
            description="Regenerates a sample of a compute provider's evaluation answers.",
            on_success="loraloop.providers.work:verified",
        ),
        JobKind(
            "drift_check",
            "loraloop.mlops.drift_job",
            submittable=False,
            description="Tests a deployment's recent inputs against its training inputs.",
            on_success="loraloop.mlops.monitor:drift_checked",
        ),
        JobKind(
            "export",
            "loraloop.catalog.export_job",
            submittable=False,
            description="Writes an adapter version as a merged model or a GGUF file.",
            on_success="loraloop.catalog.exports:export_succeeded",
        ),
    ]
}


def get(name: str, *, submitted: bool = False) -> JobKind:
    kind = KINDS.get(name)
    if kind is None or (submitted and not kind.submittable):
        allowed = sorted(k.name for k in KINDS.values() if k.submittable or not submitted)
        raise InvalidRequest(
            f"job kind {name!r} is unknown; use one of: {', '.join(allowed)}", param="kind"
        )
    return kind


def load_handler(kind: JobKind) -> Handler:
    handler: Handler = importlib.import_module(kind.module).run
    return handler


def success_hook(kind: JobKind) -> Callable[..., Any] | None:
    if kind.on_success is None:
        return None
    module, _, name = kind.on_success.partition(":")
    hook: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return hook


def validate_payload(kind: JobKind, payload: dict[str, Any]) -> dict[str, Any]:
    validated: dict[str, Any] = importlib.import_module(kind.module).validate(payload)
    return validated
