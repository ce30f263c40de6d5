"""The child process that runs one job: ``python -m loraloop.jobs.child``.

Protocol: one JSON object on stdin (``{"kind", "payload", "plugins"}``, ``plugins`` being the
modules the parent loaded from its settings, loaded here besides the installed ones); JSON lines
on stdout, each ``{"type": "event" | "result" | "error", ...}``. Anything the handler prints
goes to stderr so it cannot corrupt the protocol. A crash (no result and no error line) is
retried by the worker.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import IO, Any

from loraloop import plugins
from loraloop.jobs import kinds

__all__ = ["main"]


def _emit(channel: IO[str], message: dict[str, Any]) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def main() -> int:
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    # Handler output must not reach the protocol channel: rebind Python's stdout, and point
    # file descriptor 1 at stderr too, for native libraries and subprocesses that write to it.
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    spec = json.loads(sys.stdin.read())
    plugins.load(spec.get("plugins", []))  # a broken plugin is reported on stderr, not fatal
    handler = kinds.load_handler(kinds.get(spec["kind"]))
    try:
        result = handler(
            spec["payload"], lambda data: _emit(channel, {"type": "event", "data": data})
        )
    except Exception as exc:  # the job failed; report it, the worker decides what follows
        traceback.print_exc()
        _emit(channel, {"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit(channel, {"type": "result", "data": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
