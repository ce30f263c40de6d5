"""The tiny model, a PEFT adapter on it and their merge, shared by the export tests (trained
and merged once per run). Modules that need other ``base``/``adapter`` fixtures define their
own, which take precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from loraloop.ml.export import merge
from loraloop.testing import make_tiny_adapter, make_tiny_model


@pytest.fixture(scope="session")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_adapter(base, tmp_path_factory.mktemp("adapter") / "peft")


@pytest.fixture(scope="session")
def merged(base: Path, adapter: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("merged") / "model"
    merge(base, adapter, out)
    return out
