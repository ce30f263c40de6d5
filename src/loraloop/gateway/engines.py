"""The inference engines of this process: one per base model, loaded on first use.

Only a few bases fit in memory at once (``engine_max_models``), so the least recently used
*idle* engine is closed when another is needed; an engine with requests in flight is never
closed under them (the limit is exceeded until one goes idle). Loading takes seconds; callers
in the event loop use :meth:`Engines.aget`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import anyio

from loraloop.config import Settings

__all__ = ["EngineLike", "Engines", "GenerationLike"]


class GenerationLike(Protocol):
    prompt_tokens: int
    completion_tokens: int
    text: str
    finish_reason: str | None
    first_token_at: float | None

    def __iter__(self) -> Iterator[Any]: ...
    def stream(self) -> AsyncIterator[Any]: ...
    def cancel(self) -> None: ...


class EngineLike(Protocol):
    """What the gateway needs of :class:`loraloop.ml.engine.Engine` (a stub in benchmarks)."""

    context_length: int

    def stats(self) -> dict[str, Any]: ...
    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]: ...
    def text_prompt(self, text: str) -> list[int]: ...
    def submit(self, prompt_ids: list[int], params: Any, adapter: Any = None) -> Any: ...
    def close(self) -> None: ...


def _real_engine(settings: Settings) -> Callable[[Path], EngineLike]:
    def build(base_path: Path) -> EngineLike:
        from loraloop.ml.engine import Engine

        return Engine(
            base_path,
            device=settings.engine_device,
            max_batch=settings.engine_max_batch,
            max_context=settings.engine_max_context,
            adapter_cache_bytes=settings.engine_adapter_cache_mb * 2**20,
        )

    return build


class Engines:
    def __init__(
        self, settings: Settings, factory: Callable[[Path], EngineLike] | None = None
    ) -> None:
        self._factory = factory or _real_engine(settings)
        self._max = settings.engine_max_models
        self._engines: OrderedDict[Path, EngineLike] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, base_path: Path) -> EngineLike:
        with self._lock:
            engine = self._engines.get(base_path)
            if engine is None:
                self._evict_idle(room_for=1)
                engine = self._factory(base_path)
                self._engines[base_path] = engine
            self._engines.move_to_end(base_path)
            return engine

    def _evict_idle(self, room_for: int) -> None:
        """Close least recently used engines that serve nobody until ``room_for`` fit."""
        for path in list(self._engines):
            if len(self._engines) + room_for <= self._max:
                return
            stats = self._engines[path].stats()
            if not stats.get("running") and not stats.get("waiting"):
                self._engines.pop(path).close()

    async def aget(self, base_path: Path) -> EngineLike:
        with self._lock:
            engine = self._engines.get(base_path)
        if engine is not None:
            return engine
        return await anyio.to_thread.run_sync(self.get, base_path)

    def loaded(self) -> list[Path]:
        with self._lock:
            return list(self._engines)

    def stats(self) -> dict[Path, dict[str, Any]]:
        """Each loaded engine's own ``stats()`` (read at scrape time by ``/metrics``)."""
        with self._lock:
            loaded = list(self._engines.items())
        return {path: engine.stats() for path, engine in loaded}

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
