"""One engine per base model; idle ones make room, busy ones are never closed under a request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loraloop.config import Settings
from loraloop.gateway.engines import Engines


class Fake:
    def __init__(self, path: Path) -> None:
        self.path, self.busy, self.closed = path, False, False
        self.context_length = 100

    def stats(self) -> dict[str, Any]:
        return {"running": int(self.busy), "waiting": 0}

    def close(self) -> None:
        self.closed = True


def test_idle_engines_make_room_and_busy_ones_stay(tmp_path: Path) -> None:
    settings = Settings(env="development", home=tmp_path, engine_max_models=2)
    made: list[Fake] = []

    def factory(path: Path) -> Any:
        made.append(Fake(path))
        return made[-1]

    engines = Engines(settings, factory)
    a, b = engines.get(Path("a")), engines.get(Path("b"))
    assert engines.get(Path("a")) is a  # reused, and now the most recently used
    a.busy = b.busy = True
    engines.get(Path("c"))  # both busy: over the limit rather than cutting a request off
    assert not a.closed
    assert not b.closed
    assert set(engines.loaded()) == {Path("a"), Path("b"), Path("c")}
    b.busy = False
    engines.get(Path("d"))  # b is idle: it goes, a (busy) stays
    assert b.closed
    assert not a.closed
    assert Path("a") in engines.loaded()
    engines.close()
    assert all(engine.closed for engine in made)
