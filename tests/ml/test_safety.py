"""Nothing that could be unpickled gets past ml/safety.py; every offending file is named."""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from loraloop.errors import InvalidRequest
from loraloop.ml import safety
from loraloop.ml.safety import (
    UnsafeWeights,
    check_model_folder,
    check_weights_file,
    read_safetensors_header,
)


class _Trap:
    """Unpickling this touches a file: proof that something ran a pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def valid() -> bytes:
    return save_safetensors({"w": np.zeros((2, 3), dtype=np.float32), "b": np.ones(3, np.int8)})


def raw(header: object, data: bytes = b"", *, length: int | None = None) -> bytes:
    encoded = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(encoded) if length is None else length) + encoded + data


def torch_save_like() -> bytes:
    """The layout torch.save writes: a zip holding data.pkl (built without torch)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": [0.0, 1.0]}, protocol=2))
    return buffer.getvalue()


F32_2 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

# (case, file name, content, expected words in the error or None when accepted)
FILE_CASES: list[tuple[str, str, bytes, str | None]] = [
    ("valid", "model.safetensors", valid(), None),
    (
        "valid with metadata",
        "a.safetensors",
        raw({"__metadata__": {"k": "v"}, "w": F32_2}, bytes(8)),
        None,
    ),
    (
        "zero-size tensor",
        "a.safetensors",
        raw({"e": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}),
        None,
    ),
    ("upper-case suffix", "A.SAFETENSORS", valid(), None),
    ("safetensors renamed .bin", "pytorch_model.bin", valid(), ".bin is a pickle format"),
    ("no suffix", "weights", valid(), "no suffix is not safetensors"),
    *[
        (
            f"pickle protocol {p} renamed",
            "model.safetensors",
            pickle.dumps({"w": 1}, protocol=p),
            f"is a pickle (protocol {p}) under a .safetensors name",
        )
        for p in (2, 3, 4, 5)
    ],
    (
        "pickle protocol 0 renamed",
        "model.safetensors",
        pickle.dumps({"w": 1}, protocol=0),
        "does not parse",
    ),
    (
        "torch.save zip renamed",
        "model.safetensors",
        torch_save_like(),
        "zip archive (the format torch.save writes",
    ),
    ("empty", "model.safetensors", b"", "too short"),
    (
        "header longer than file",
        "a.safetensors",
        raw({"w": F32_2}, length=10**6),
        "header length 1000000 is impossible",
    ),
    ("header not JSON", "a.safetensors", raw(b"\xff\xfe not json"), "the header is not JSON"),
    ("header a JSON list", "a.safetensors", raw([1, 2]), "the header is not a JSON object"),
    (
        "unknown dtype",
        "a.safetensors",
        raw({"w": {**F32_2, "dtype": "OBJECT"}}, bytes(8)),
        "unknown dtype 'OBJECT'",
    ),
    (
        "negative shape",
        "a.safetensors",
        raw({"w": {**F32_2, "shape": [-2]}}, bytes(8)),
        "integer shape",
    ),
    (
        "offsets past the end",
        "a.safetensors",
        raw({"w": {**F32_2, "data_offsets": [0, 64]}}, bytes(8)),
        "outside the file",
    ),
    (
        "size does not match shape",
        "a.safetensors",
        raw({"w": {**F32_2, "shape": [3]}}, bytes(8)),
        "8 bytes for shape [3]",
    ),
    (
        "overlapping tensors",
        "a.safetensors",
        raw({"a": F32_2, "b": F32_2}, bytes(8)),
        "overlaps or leaves holes",
    ),
    (
        "trailing bytes",
        "a.safetensors",
        raw({"w": F32_2}, bytes(12)),
        "4 bytes after the last tensor",
    ),
    (
        "metadata not strings",
        "a.safetensors",
        raw({"__metadata__": {"k": 1}, "w": F32_2}, bytes(8)),
        "__metadata__",
    ),
]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [case[1:] for case in FILE_CASES],
    ids=[case[0] for case in FILE_CASES],
)
def test_check_weights_file(
    tmp_path: Path, name: str, content: bytes, expected: str | None
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    if expected is None:
        check_weights_file(path)
        return
    with pytest.raises(UnsafeWeights) as caught:
        check_weights_file(path)
    assert expected in caught.value.message
    assert name in caught.value.message


def test_a_trap_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    trap = tmp_path / "adapter_model.safetensors"
    trap.write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(UnsafeWeights, match="is a pickle"):
        check_weights_file(trap)
    with pytest.raises(UnsafeWeights, match="is a pickle"):
        check_model_folder(tmp_path)
    assert not marker.exists()


def test_read_header_returns_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(valid())
    header = read_safetensors_header(path)
    assert header["w"]["shape"] == [2, 3]
    assert header["b"]["dtype"] == "I8"


def _folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    return tmp_path


# (case, files in the folder, names every error must mention; empty when accepted)
FOLDER_CASES: list[tuple[str, dict[str, bytes], list[str]]] = [
    ("one safetensors file", {"model.safetensors": valid(), "config.json": b"{}"}, []),
    (
        "shards",
        {"model-00001-of-00002.safetensors": valid(), "model-00002-of-00002.safetensors": valid()},
        [],
    ),
    (
        "pickle next to safetensors",
        {"model.safetensors": valid(), "pytorch_model.bin": b"\x80\x02."},
        ["pytorch_model.bin"],
    ),
    (
        "pickle in a sub-folder",
        {"model.safetensors": valid(), "original/consolidated.pth": b"x"},
        ["original/consolidated.pth"],
    ),
    ("no weights at all", {"config.json": b"{}"}, ["no .safetensors weight file"]),
    (
        "only nested safetensors",
        {"sub/model.safetensors": valid()},
        ["no .safetensors weight file"],
    ),
    (
        "every problem at once",
        {
            "model.safetensors": pickle.dumps([1], protocol=4),
            "training_args.bin": b"x",
            "optimizer.pt": b"x",
            "rng.pkl": b"x",
            "last.ckpt": b"x",
            "extra.pickle": b"x",
        },
        [
            "model.safetensors: is a pickle",
            "training_args.bin",
            "optimizer.pt",
            "rng.pkl",
            "last.ckpt",
            "extra.pickle",
        ],
    ),
]


@pytest.mark.parametrize(
    ("files", "named"), [case[1:] for case in FOLDER_CASES], ids=[case[0] for case in FOLDER_CASES]
)
def test_check_model_folder(tmp_path: Path, files: dict[str, bytes], named: list[str]) -> None:
    folder = _folder(tmp_path, files)
    if not named:
        weights = check_model_folder(folder)
        assert [w.name for w in weights] == sorted(n for n in files if n.endswith(".safetensors"))
        return
    with pytest.raises(UnsafeWeights) as caught:
        check_model_folder(folder)
    for name in named:
        assert name in caught.value.message
    assert len(caught.value.problems) == len(named)


def test_a_missing_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsafeWeights, match="not a folder"):
        check_model_folder(tmp_path / "absent")


def test_unsafe_weights_is_a_400_invalid_request() -> None:
    error = UnsafeWeights(["a.bin: pickle"])
    assert isinstance(error, InvalidRequest)
    assert error.status_code == 400
    assert error.to_body()["error"]["code"] == "unsafe_weights"


def test_public_names() -> None:
    assert set(safety.__all__) == {
        "PICKLE_SUFFIXES",
        "UnsafeWeights",
        "check_model_folder",
        "check_weights_file",
        "read_safetensors_header",
    }
