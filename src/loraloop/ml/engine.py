"""The inference engine: one base model in memory serving many LoRA adapters at once.

A background thread runs one step at a time (continuous batching): requests join the running
batch as slots free up and leave it the moment they finish, each step being ONE forward pass
over a flat ragged batch::

    submit() ──▶ waiting ──admit (free slot)──▶ running ──finish / cancel──▶ slot freed
                                                  │
    step:  [ decode rows: last token of every running request | prompt chunks of new ones ]
           decoder (multilora.py: per-token adapters; kvcache.py: per-slot attention)
           lm_head on the last position of each request ──▶ sampling.py ──▶ Delta per request

Adapters (PEFT folders, safetensors only) load synchronously in :meth:`Engine.submit` into a
byte-bounded LRU cache, so a bad adapter is refused there. Tokens stream as :class:`Delta`
objects through :class:`Generation`, blocking (``for delta in generation``) or asyncio
(``async for delta in generation.stream()``).

Importing this module does not import torch (the API imports it for the types); the first
:class:`Engine` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraloop.errors import InvalidRequest, LoraloopError
from loraloop.ml.sampling import SamplingParams

if TYPE_CHECKING:  # torch and the model code load with the first Engine, not on import
    from loraloop.ml.batching import Runner, Sequence
    from loraloop.ml.multilora import AdapterCache

__all__ = [
    "AdapterRef",
    "ContextTooLong",
    "Delta",
    "Engine",
    "EngineClosed",
    "Generation",
    "SamplingParams",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterRef:
    """An adapter to serve: ``key`` names it in the cache (e.g. the artifact's sha256)."""

    key: str
    path: Path
    """The PEFT folder: adapter_config.json + adapter_model.safetensors."""


@dataclass(frozen=True)
class Delta:
    """What a request produced in one step."""

    text: str
    """New text since the last delta; never half a character, never a possible stop prefix."""
    token_ids: tuple[int, ...]
    finish_reason: str | None
    """None until the last delta: ``"stop"``, ``"length"`` or ``"cancelled"``."""


class ContextTooLong(InvalidRequest):
    """The prompt plus ``max_tokens`` does not fit the context window."""

    default_code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
        room = context_length - prompt_tokens
        if room < 1:
            fix = f"shorten the messages by at least {1 - room} tokens"
        else:
            fix = f"shorten the messages or set max_tokens to at most {room}"
        super().__init__(
            f"this model's context is {context_length} tokens, but the request needs "
            f"{prompt_tokens + max_tokens} ({prompt_tokens} in the prompt + {max_tokens} "
            f"max_tokens); {fix}",
            param="messages",
        )
        self.prompt_tokens = prompt_tokens
        self.max_tokens = max_tokens
        self.context_length = context_length


class EngineClosed(LoraloopError):
    """The engine was closed; it takes no more requests."""

    status_code = 503
    default_code = "engine_closed"


#: asyncio events to set, each with the loop it belongs to
_Wakes = list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]


class Generation:
    """One request's output as it is produced. Iterating twice replays it from the start.

    Leaving an iteration before the end (a client that disconnects) cancels the request.
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
        self._waiters: _Wakes = []
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

    def _publish(self, delta: Delta, wakes: _Wakes | None = None) -> None:
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
            _wake_loops(waiters)
        else:
            wakes.extend(waiters)

    def _fail(self, error: LoraloopError) -> None:
        with self._changed:
            self._error = error
            self._changed.notify_all()
            waiters = list(self._waiters)
        _wake_loops(waiters)


def _wake_loops(waiters: _Wakes) -> None:
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


class Engine:
    """Serve one base model with many adapters; see the module docstring."""

    def __init__(
        self,
        base_path: Path,
        *,
        device: str = "auto",
        dtype: str = "auto",
        max_batch: int = 16,
        max_context: int | None = None,
        adapter_cache_bytes: int = 512 * 2**20,
        prefill_chunk: int = 512,
    ) -> None:
        from loraloop.ml.batching import Runner, resolve_device, resolve_dtype
        from loraloop.ml.multilora import AdapterCache

        _check_sizes(max_batch, max_context, adapter_cache_bytes, prefill_chunk)
        resolved = resolve_device(device)
        self._runner: Runner = Runner(
            base_path,
            device=resolved,
            dtype=resolve_dtype(dtype, resolved),
            max_batch=max_batch,
            max_context=max_context,
            prefill_chunk=prefill_chunk,
        )
        self.tokenizer: Any = self._runner.tokenizer
        self.context_length: int = self._runner.context_length
        self.max_batch = max_batch
        self._adapters: AdapterCache = AdapterCache(adapter_cache_bytes, self._runner.load_adapter)
        self._work = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._free = list(range(max_batch))
        self._closed = False
        self._steps = self._generated = 0
        self._thread = threading.Thread(target=self._loop, name="loraloop-engine", daemon=True)
        self._thread.start()

    # --- the public surface ------------------------------------------------------------------

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        """The conversation rendered by the model's chat template, ready for the answer."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise InvalidRequest(
                "this base model has no chat template; send a plain completion prompt instead",
                code="no_chat_template",
                param="messages",
            )
        try:
            rendered = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True
            )
        except Exception as error:  # jinja raises its own errors (e.g. roles out of order)
            raise InvalidRequest(
                f"the chat template cannot render these messages: {error}", param="messages"
            ) from error
        ids: list[int] = rendered["input_ids"] if isinstance(rendered, Mapping) else rendered
        return [int(i) for i in ids]

    def text_prompt(self, text: str) -> list[int]:
        """A plain prompt, with the special tokens (e.g. BOS) the tokenizer adds."""
        return [int(i) for i in self.tokenizer(text, add_special_tokens=True)["input_ids"]]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def load_adapter(self, adapter: AdapterRef) -> None:
        """Load ``adapter`` into the cache now (raises :class:`InvalidRequest` if it cannot)."""
        self._adapters.get(adapter.key, adapter.path)

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, adapter: AdapterRef | None = None
    ) -> Generation:
        """Queue a request; its output streams from the returned :class:`Generation`."""
        prompt = self._checked_prompt(prompt_ids)
        if len(prompt) + params.max_tokens > self.context_length:
            raise ContextTooLong(len(prompt), params.max_tokens, self.context_length)
        loaded = None if adapter is None else self._adapters.get(adapter.key, adapter.path)
        generation = Generation(len(prompt), self._wake)
        sequence = self._runner.sequence(generation, prompt, params, loaded)
        with self._work:
            if self._closed:
                raise EngineClosed("the inference engine is shut down")
            self._waiting.append(sequence)
            self._work.notify()
        return generation

    def stats(self) -> dict[str, Any]:
        with self._work:
            running, waiting = len(self._running), len(self._waiting)
        return {
            "running": running,
            "waiting": waiting,
            "cached_adapters": len(self._adapters.keys()),
            "cache_bytes": self._adapters.nbytes,
            "kv_cache_bytes": self._runner.cache.nbytes,
            "steps": self._steps,
            "generated_tokens": self._generated,
            "device": str(self._runner.device),
            "dtype": str(self._runner.dtype).removeprefix("torch."),
        }

    def close(self) -> None:
        """Stop the step thread; unfinished generations end with ``"cancelled"``."""
        with self._work:
            self._closed = True
            self._work.notify()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checked_prompt(self, prompt_ids: list[int]) -> list[int]:
        vocabulary = self._runner.vocab_size
        if not prompt_ids:
            raise InvalidRequest("the prompt is empty", param="messages")
        bad = [
            i
            for i in prompt_ids
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocabulary
        ]
        if bad:
            raise InvalidRequest(
                f"prompt token ids must be integers from 0 to {vocabulary - 1}; got {bad[:5]}",
                param="prompt",
            )
        return list(prompt_ids)

    def _wake(self) -> None:
        with self._work:
            self._work.notify()

    # --- the step thread ---------------------------------------------------------------------

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._work:
                    while not self._closed and not self._waiting and not self._running:
                        self._work.wait()
                    if self._closed:
                        break
                try:
                    self._step()
                except Exception as error:  # a bug or out of memory: fail these, keep serving
                    log.exception("inference step failed")
                    self._fail_all(LoraloopError(f"inference failed: {error}"))
        self._cancel_all()

    def _step(self) -> None:
        self._reap()
        self._admit()
        if not self._running:
            return
        sampled = self._runner.step(self._running)
        self._steps += 1
        wakes: _Wakes = []
        for sequence, token in sampled:
            self._advance(sequence, token, wakes)
        _wake_loops(wakes)

    def _reap(self) -> None:
        for sequence in [s for s in self._running if s.handle.cancel_requested]:
            self._finish(sequence, Delta("", (), "cancelled"))

    def _admit(self) -> None:
        with self._work:
            while self._waiting and self._free:
                sequence = self._waiting.popleft()
                if sequence.handle.cancel_requested:
                    sequence.handle._publish(Delta("", (), "cancelled"))
                    continue
                self._free.sort()
                sequence.slot = self._free.pop(0)  # lowest first keeps decode slots dense
                self._running.append(sequence)
            # requests still waiting may be cancelled too; do not keep them until a slot frees
            for sequence in [s for s in self._waiting if s.handle.cancel_requested]:
                self._waiting.remove(sequence)
                sequence.handle._publish(Delta("", (), "cancelled"))

    def _advance(self, sequence: Sequence, token: int, wakes: _Wakes) -> None:
        """Record one sampled token, stream its text, and end the request if it is done."""
        sequence.output.append(token)
        sequence.sampler.observe(token)
        self._generated += 1
        finish = None
        if token in self._runner.eos and not sequence.params.ignore_eos:
            text, finish = sequence.text.flush(), "stop"
        else:
            text = sequence.text.push(token)
            if not sequence.text.stopped and len(sequence.output) >= sequence.params.max_tokens:
                text += sequence.text.flush()
                finish = "length"
            if sequence.text.stopped:
                finish = "stop"
        delta = Delta(text, (token,), finish)
        if finish is None:
            sequence.handle._publish(delta, wakes)
        else:
            self._finish(sequence, delta, wakes)

    def _finish(self, sequence: Sequence, delta: Delta, wakes: _Wakes | None = None) -> None:
        with self._work:
            self._running.remove(sequence)
            self._free.append(sequence.slot)
        sequence.handle._publish(delta, wakes)

    def _fail_all(self, error: LoraloopError) -> None:
        with self._work:
            failed = [*self._running, *self._waiting]
            self._running.clear()
            self._waiting.clear()
            self._free = list(range(self.max_batch))
        self._runner.reset()
        for sequence in failed:
            sequence.handle._fail(error)

    def _cancel_all(self) -> None:
        with self._work:
            pending = [*self._running, *self._waiting]
            self._running.clear()
            self._waiting.clear()
        for sequence in pending:
            sequence.handle._publish(Delta("", (), "cancelled"))


def _check_sizes(
    max_batch: int, max_context: int | None, cache_bytes: int, prefill_chunk: int
) -> None:
    problems = {}
    if max_batch < 1:
        problems["max_batch"] = f"max_batch: {max_batch} must be at least 1"
    if max_context is not None and max_context < 2:
        problems["max_context"] = f"max_context: {max_context} must be at least 2 (or None)"
    if cache_bytes < 0:
        problems["adapter_cache_bytes"] = f"adapter_cache_bytes: {cache_bytes} must be >= 0"
    if prefill_chunk < 1:
        problems["prefill_chunk"] = f"prefill_chunk: {prefill_chunk} must be at least 1"
    if problems:
        raise InvalidRequest("; ".join(problems.values()), param=next(iter(problems)))
