"""The ``selftest`` job: proves the worker, progress stream and cancellation work end to end.

Payload: ``steps`` (1–1000), ``seconds_per_step`` (0–60), optional ``fail_at_step`` (the
handler raises) and ``crash_at_step`` (the process dies without a result or an error message,
as an OOM kill would, leaving one line on stderr). Each progress event carries the process id,
so a test can check that a cancelled job's process is gone.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from loraloop.errors import InvalidRequest

__all__ = ["run", "validate"]


def validate(payload: dict[str, Any]) -> dict[str, Any]:
    problems = []
    steps = payload.get("steps", 5)
    delay = payload.get("seconds_per_step", 0.2)
    if not _whole(steps) or not 1 <= steps <= 1000:
        problems.append(f"steps {steps!r} must be a whole number from 1 to 1000")
    if isinstance(delay, bool) or not isinstance(delay, int | float) or not 0 <= delay <= 60:
        problems.append(f"seconds_per_step {delay!r} must be a number from 0 to 60")
    for name in ("fail_at_step", "crash_at_step"):
        value = payload.get(name)
        if value is not None and not _whole(value):
            problems.append(f"{name} {value!r} must be a whole number")
    unknown = set(payload) - {"steps", "seconds_per_step", "fail_at_step", "crash_at_step"}
    if unknown:
        problems.append(f"unknown payload fields: {', '.join(sorted(unknown))}")
    if problems:
        raise InvalidRequest("; ".join(problems), param="payload")
    return {**payload, "steps": steps, "seconds_per_step": delay}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


def run(payload: dict[str, Any], report: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    steps, delay = payload["steps"], payload["seconds_per_step"]
    started = time.monotonic()
    for step in range(1, steps + 1):
        time.sleep(delay)
        if step == payload.get("crash_at_step"):
            print(f"selftest: crashing at step {step}", file=sys.stderr, flush=True)
            os._exit(17)
        if step == payload.get("fail_at_step"):
            raise RuntimeError(f"selftest asked to fail at step {step}")
        elapsed = time.monotonic() - started
        eta = round(elapsed / step * (steps - step), 2)
        report({"step": step, "total": steps, "eta_s": eta, "pid": os.getpid()})
    return {"steps": steps, "seconds": round(time.monotonic() - started, 3), "pid": os.getpid()}
