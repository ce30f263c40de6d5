"""Adapter archives: unpacked without escapes, links, devices or bombs, every bad member listed."""

from __future__ import annotations

import io
import stat
import struct
import tarfile
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from loraloop.errors import InvalidRequest
from loraloop.ml import adapter_archive
from loraloop.ml.adapter_archive import MAX_MEMBERS, unpack
from loraloop.ml.adapter_import import AdapterRejected, base_shapes, inspect_adapter
from loraloop.testing import make_tiny_adapter, make_tiny_model

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def shapes(base: Path) -> dict[str, tuple[int, ...]]:
    return base_shapes(base)


@pytest.fixture(scope="module")
def genuine(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_adapter(base, tmp_path_factory.mktemp("genuine"), targets=["q_proj", "v_proj"])


def zip_of(path: Path, members: Sequence[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():  # zipfile warns about the duplicate-name case
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def tar_of(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as archive:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            archive.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def zip_symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def zip_device(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFCHR | 0o666) << 16
    return info


def lying_zip(path: Path) -> Path:
    """20 MB of zeros whose headers declare 10 bytes."""
    zip_of(path, [("adapter_config.json", bytes(20_000_000))])
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 22, 10)  # local header: uncompressed size
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, 10)  # central directory
    path.write_bytes(bytes(data))
    return path


def raw(data: bytes) -> Callable[[Path], Path]:
    def build(path: Path) -> Path:
        path.write_bytes(data)
        return path

    return build


OK = ("adapter_config.json", b"{}")

# (case, archive name, builder, words one problem must contain)
ARCHIVE_CASES: list[tuple[str, str, Callable[[Path], Path], str]] = [
    ("zip ..", "a.zip", lambda p: zip_of(p, [OK, ("../evil", b"x")]), "'../evil': climbs out"),
    ("zip backslash ..", "a.zip", lambda p: zip_of(p, [OK, ("..\\evil", b"x")]), "climbs out"),
    ("zip sibling folder", "a.zip", lambda p: zip_of(p, [OK, ("../dest_evil/x", b"x")]),
     "'../dest_evil/x': climbs out"),
    ("zip absolute", "a.zip", lambda p: zip_of(p, [OK, ("/etc/evil", b"x")]),
     "'/etc/evil': is an absolute path"),
    ("zip drive letter", "a.zip", lambda p: zip_of(p, [OK, ("C:/evil", b"x")]), "absolute path"),
    ("zip symlink", "a.zip", lambda p: zip_of(p, [OK, (zip_symlink("l"), b"/etc/passwd")]),
     "'l': is a symbolic link"),
    ("zip device", "a.zip", lambda p: zip_of(p, [OK, (zip_device("d"), b"")]),
     "'d': is a device or other special file"),
    ("zip duplicate", "a.zip", lambda p: zip_of(p, [OK, OK]), "appears twice"),
    ("zip many members", "a.zip",
     lambda p: zip_of(p, [OK] + [(f"f{i}", b"") for i in range(MAX_MEMBERS)]),
     f"more than {MAX_MEMBERS} members"),
    ("zip bomb declared", "a.zip", lambda p: zip_of(p, [OK, ("z", bytes(3_000_000))]),
     "declares over 1000000 bytes"),
    ("zip bomb lying", "a.zip", lying_zip, "cannot be read as an archive (Bad CRC-32"),
    ("tar symlink", "a.tar", lambda p: tar_of(p, [(entry("l", tarfile.SYMTYPE, "/etc/x"), b"")]),
     "'l': is a symbolic link to '/etc/x'"),
    ("tar hardlink", "a.tar", lambda p: tar_of(p, [(entry("l", tarfile.LNKTYPE, "/etc/x"), b"")]),
     "'l': is a hard link to '/etc/x'"),
    ("tar device", "a.tar", lambda p: tar_of(p, [(entry("d", tarfile.CHRTYPE), b"")]),
     "'d': is a device file or FIFO"),
    ("tar fifo", "a.tgz", lambda p: tar_of(p, [(entry("d", tarfile.FIFOTYPE), b"")]),
     "'d': is a device file or FIFO"),
    ("tar ..", "a.tar.gz", lambda p: tar_of(p, [(entry("a/../../evil"), b"x")]), "climbs out"),
    ("tar bomb", "a.tar.gz", lambda p: tar_of(p, [(entry("z"), bytes(3_000_000))]),
     "declares over 1000000 bytes"),
    ("not an archive", "a.zip", raw(b"hello"),
     "a.zip: cannot be read as an archive"),
    ("not gzip", "a.tgz", raw(b"hello"), "cannot be read as an archive"),
    ("other format", "a.rar", raw(b"x"),
     "a.rar: not a .zip, .tar, .tar.gz or .tgz archive"),
    ("no config", "a.zip", lambda p: zip_of(p, [("README.md", b"")]), "no adapter_config.json"),
    ("two folders", "a.zip", lambda p: zip_of(p, [("a/adapter_config.json", b""), ("b/x", b"")]),
     "no adapter_config.json at the top of the archive or inside its single top-level folder"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "build", "words"), [c[1:] for c in ARCHIVE_CASES], ids=[c[0] for c in ARCHIVE_CASES]
)
def test_dangerous_archives_are_refused(
    tmp_path: Path, name: str, build: Callable[[Path], Path], words: str
) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(AdapterRejected) as caught:
        unpack(build(tmp_path / name), dest, max_bytes=1_000_000)
    assert [p for p in caught.value.problems if words in p], caught.value.problems
    assert list(dest.iterdir()) == []
    assert not (tmp_path / "evil").exists()
    assert not (tmp_path / "dest_evil").exists()


def test_every_bad_member_is_listed(tmp_path: Path) -> None:
    archive = tar_of(tmp_path / "a.tar", [
        (entry("adapter_config.json"), b"{}"),
        (entry("../evil"), b"x"),
        (entry("/etc/cron.d/evil"), b"x"),
        (entry("l", tarfile.SYMTYPE, "/"), b""),
    ])  # fmt: skip
    with pytest.raises(AdapterRejected) as caught:
        unpack(archive, tmp_path / "dest")
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "'../evil'",
        "'/etc/cron.d/evil'",
        "'l'",
    ]
    assert isinstance(caught.value, InvalidRequest)
    assert caught.value.code == "invalid_adapter"
    assert caught.value.message.startswith("refused the adapter: '../evil': climbs out")


def _members(adapter: Path, wrapper: str) -> list[tuple[str, bytes]]:
    return [(f"{wrapper}{p.name}", p.read_bytes()) for p in sorted(adapter.iterdir())]


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz", ".tgz"])
def test_a_wrapped_adapter_is_found_and_passes(
    genuine: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path, suffix: str
) -> None:
    archive = tmp_path / f"upload{suffix}"
    members = _members(genuine, "my-adapter/")
    if suffix == ".zip":
        zip_of(archive, members)
    else:
        tar_of(archive, [(entry("my-adapter", tarfile.DIRTYPE), b"")]
               + [(entry(n), data) for n, data in members])  # fmt: skip
    root = unpack(archive, tmp_path / "dest")
    assert root == (tmp_path / "dest" / "my-adapter").resolve()
    assert inspect_adapter(root, shapes).ok


def test_an_unwrapped_adapter_is_found_and_desktop_junk_skipped(
    genuine: Path, shapes: dict[str, tuple[int, ...]], tmp_path: Path
) -> None:
    junk = [("__MACOSX/._adapter_config.json", b"x"), (".DS_Store", b"x"), ("._README.md", b"x")]
    archive = zip_of(tmp_path / "upload.zip", _members(genuine, "") + junk)
    root = unpack(archive, tmp_path / "dest")
    assert root == (tmp_path / "dest").resolve()
    assert sorted(p.name for p in root.iterdir()) == sorted(p.name for p in genuine.iterdir())
    assert inspect_adapter(root, shapes).ok


def test_bytes_are_counted_while_extracting(tmp_path: Path) -> None:
    """The second line of defence, should a reader ever yield more than its header declared."""
    Member = adapter_archive._Member
    liar = Member("a", 10, "file", lambda: io.BytesIO(bytes(100)))
    with pytest.raises(AdapterRejected, match="'a': expands past the 10 bytes it declares"):
        adapter_archive._extract([liar], tmp_path, 1_000)
    honest = [Member(n, 60, "file", lambda: io.BytesIO(bytes(60))) for n in ("b", "c")]
    with pytest.raises(AdapterRejected, match="expands past 100 bytes"):
        adapter_archive._extract(honest, tmp_path, 100)


def test_the_destination_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "old").touch()
    with pytest.raises(ValueError, match="must be empty"):
        unpack(zip_of(tmp_path / "a.zip", [OK]), tmp_path / "dest")


def test_public_names() -> None:
    assert sorted(adapter_archive.__all__) == ["MAX_BYTES", "MAX_MEMBERS", "unpack"]
