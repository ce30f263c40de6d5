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
objects through :class:`Generation` (streaming.py), blocking (``for delta in generation``) or
asyncio (``async for delta in generation.stream()``).

Importing this module does not import torch (the API imports it for the types); the first
:class:`Engine` does.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loraloop.errors import InvalidRequest, LoraloopError
from loraloop.ml.sampling import SamplingParams
from loraloop.ml.streaming import Delta, Generation, Wakes, wake_loops

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
        wakes: Wakes = []
        for sequence, token in sampled:
            self._advance(sequence, token, wakes)
        wake_loops(wakes)

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

    def _advance(self, sequence: Sequence, token: int, wakes: Wakes) -> None:
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

    def _finish(self, sequence: Sequence, delta: Delta, wakes: Wakes | None = None) -> None:
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
