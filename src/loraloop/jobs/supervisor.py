"""Run one job in a child process and follow it: forward its progress events, keep the lease
alive, and kill the child as soon as the lease is refused.

Shared by the local worker (which reaches the queue through the database) and the remote
``loraloop worker`` (which reaches it over HTTP): each gives a :class:`Lease` for the job.
Nothing here touches the database or the network.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from loraloop.plugins import child_modules

__all__ = ["Lease", "Outcome", "Stop", "run_child"]

log = logging.getLogger(__name__)
_STDERR_TAIL = 2000


class Stop(Exception):
    """The lease was refused (the job was cancelled, or another attempt owns it)."""


class Lease(Protocol):
    def heartbeat(self) -> None:
        """Extend the lease; raise :class:`Stop` when it is refused."""

    def event(self, data: dict[str, Any]) -> None:
        """Record a progress event (it extends the lease too); :class:`Stop` when refused."""


@dataclass
class Outcome:
    result: dict[str, Any] | None = None
    error: str | None = None
    stopped: bool = False
    """The lease was refused or the worker is stopping: the child was killed."""
    code: int = 0
    tail: str = ""
    """The end of the child's stderr."""

    def failure(self) -> tuple[str, bool] | None:
        """(message, retryable) when the child did not produce a result, else None."""
        if self.result is not None and self.code == 0:
            return None
        if self.error is not None:
            return self.error + _tail(self.tail), False
        return (
            f"the job's process exited with code {self.code} without a result" + _tail(self.tail),
            True,
        )


def run_child(
    kind: str,
    payload: dict[str, Any],
    lease: Lease,
    *,
    beat_every: float,
    stopping: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Run ``python -m loraloop.jobs.child`` for the job until it exits or must stop."""
    outcome = Outcome()
    with tempfile.TemporaryFile("w+") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-m", "loraloop.jobs.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,  # its own process group: a kill reaches its children too
        )
        assert child.stdin is not None
        assert child.stdout is not None
        try:
            # the plugins this process loaded from settings, so their metrics score there too
            spec = {"kind": kind, "payload": payload, "plugins": child_modules()}
            child.stdin.write(json.dumps(spec))
            child.stdin.close()
        except BrokenPipeError:
            pass  # the child died before reading its job; its exit code tells the story
        lines: queue.Queue[str | None] = queue.Queue()
        reader = threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True)
        reader.start()
        try:
            _follow(lease, child, lines, outcome, beat_every, stopping)
        except BaseException:
            kill(child)  # whatever went wrong here, no child outlives it
            raise
        finally:
            outcome.code = child.wait()
            reader.join(timeout=5)
            child.stdout.close()
        stderr.seek(0)
        outcome.tail = stderr.read()[-_STDERR_TAIL:]
    return outcome


def _follow(
    lease: Lease,
    child: subprocess.Popen[str],
    lines: queue.Queue[str | None],
    outcome: Outcome,
    beat_every: float,
    stopping: Callable[[], bool],
) -> None:
    last_beat = time.monotonic()
    while True:
        try:
            line = lines.get(timeout=min(beat_every, 1.0))
        except queue.Empty:
            line = ""
        if line is None:
            return
        try:
            message = _parse(line) if line else None
            if message is not None:
                kind = message.get("type")
                if kind == "event":
                    lease.event(message["data"])
                elif kind == "result":
                    outcome.result = message["data"]
                elif kind == "error":
                    outcome.error = str(message["message"])
                last_beat = time.monotonic()
            if stopping():
                raise Stop("the worker is shutting down")
            if message is None and time.monotonic() - last_beat >= beat_every:
                lease.heartbeat()
                last_beat = time.monotonic()
        except Stop:
            outcome.stopped = True
            kill(child)
            return


def kill(child: subprocess.Popen[str]) -> None:
    """Kill the job's whole process group (data loaders and the like included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def _tail(text: str) -> str:
    return f"\n--- last output ---\n{text.strip()}" if text.strip() else ""


def _parse(line: str) -> dict[str, Any] | None:
    """One protocol message, or None for a line that is not one (stray output is ignored)."""
    try:
        message = json.loads(line)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        log.warning("ignoring a line that is not a protocol message: %.200s", line)
        return None
    return message


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line.strip() or "")
    lines.put(None)
