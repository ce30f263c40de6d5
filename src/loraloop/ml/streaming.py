"""A request's output as it streams: :class:`Delta` pieces gathered in a :class:`Generation`.

The engine thread publishes; any number of readers follow, each from the start::

    engine thread ──_publish(delta)──▶ Generation ──▶ for delta in generation        (threads)
                                          │       └──▶ async for delta in .stream()  (asyncio)
                                          └─ wakes each asyncio loop with one call_soon_threadsafe
                                             per step, never blocking it
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

from loraloop.errors import LoraloopError

__all__ = ["Delta", "Generation", "Wakes", "wake_loops"]


@dataclass(frozen=True)
class Delta:
    """What a request produced in one step."""

    text: str
    """New text since the last delta; never half a character, never a possible stop prefix."""
    token_ids: tuple[int, ...]
    finish_reason: str | None
    """None until the last delta: ``"stop"``, ``"length"`` or ``"cancelled"``."""


#: asyncio events to set, each with the loop it belongs to
Wakes = list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]


class Generation:
    """One request's output as it is produced. Iterating twice replays it from the start.

    ``text``, ``completion_tokens`` and ``finish_reason`` are so far; ``first_token_at`` is the
    ``time.perf_counter()`` of the first token. Leaving an iteration before the end (``break``,
    a closed stream, a cancelled task: a client that went away) cancels the request. If the
    engine fails, iterating raises :class:`~loraloop.errors.LoraloopError`.
    """

    def __init__(self, prompt_tokens: int, wake: Callable[[], None]) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.text = ""
        self.finish_reason: str | None = None
        self.first_token_at: float | None = None
        self._wake = wake
        self._deltas: list[Delta] = []
        self._error: LoraloopError | None = None
        self._changed = threading.Condition()
        self._waiters: Wakes = []
        self.cancel_requested = False

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self._error is not None

    def __iter__(self) -> Iterator[Delta]:
        seen = 0
        try:
            while True:
                with self._changed:
                    while seen == len(self._deltas) and not self.done:
                        self._changed.wait()
                    new, seen = self._deltas[seen:], len(self._deltas)
                yield from new
                if seen == len(self._deltas) and self.done:
                    self._raise()
                    return
        finally:
            self._abandoned()

    async def stream(self) -> AsyncIterator[Delta]:
        """The deltas for asyncio: the engine thread wakes the loop, nothing blocks it."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._changed:
            self._waiters.append(waiter)
        seen = 0
        try:
            while True:
                waiter[1].clear()
                with self._changed:
                    new, seen, done = self._deltas[seen:], len(self._deltas), self.done
                for delta in new:
                    yield delta
                if done and seen == len(self._deltas):
                    self._raise()
                    return
                if not new:
                    await waiter[1].wait()
        finally:
            with self._changed:
                self._waiters.remove(waiter)
            self._abandoned()

    def result(self) -> str:
        """Block until the request is done; the full text."""
        for _ in self:
            pass
        return self.text

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the next step. Idempotent."""
        if not self.done and not self.cancel_requested:
            self.cancel_requested = True
            self._wake()

    def _abandoned(self) -> None:
        if not self.done:
            self.cancel()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _publish(self, delta: Delta, wakes: Wakes | None = None) -> None:
        """Called by the engine thread only. Asyncio listeners are woken through ``wakes``
        (once per loop per step) when given, else at once."""
        with self._changed:
            if delta.token_ids and self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            self.text += delta.text
            self.completion_tokens += len(delta.token_ids)
            self._deltas.append(delta)
            self.finish_reason = delta.finish_reason
            self._changed.notify_all()
            waiters = list(self._waiters)
        if wakes is None:
            wake_loops(waiters)
        else:
            wakes.extend(waiters)

    def _fail(self, error: LoraloopError) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()
            waiters = list(self._waiters)
        wake_loops(waiters)


def wake_loops(waiters: Wakes) -> None:
    """Set each event from its own loop's thread: one call per loop, however many events."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for loop, event in waiters:
        by_loop.setdefault(loop, []).append(event)
    for loop, events in by_loop.items():
        # a closed loop raises RuntimeError: nobody is listening there any more
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_all, events)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()
