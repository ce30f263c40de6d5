"""Unpacking an uploaded adapter archive without escapes, links, devices or bombs.

    upload.zip / .tar(.gz) ──unpack──▶ dest/[wrapper/]adapter_config.json ... ──▶ adapter_import

Every member is vetted before a byte is written, and sizes are counted again as bytes come
out, because a header can lie. All bad members are listed at once (:class:`AdapterRejected`),
so the person uploading fixes everything in one go.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

from loraloop.ml.adapter_import import AdapterRejected

__all__ = ["MAX_BYTES", "MAX_MEMBERS", "unpack"]

#: A rank-256 adapter on every linear layer of an 8B model is about 1.3 GB in F32.
MAX_BYTES = 2 * 1024**3
#: An adapter is two files (plus a README); a few folders around them are fine.
MAX_MEMBERS = 64

_CONFIG = "adapter_config.json"
_CHUNK = 1024**2


@dataclass(frozen=True)
class _Member:
    name: str
    size: int
    kind: str
    """"file", "folder", or what else it is ("a symbolic link to '/etc'"), which is refused."""
    open: Callable[[], IO[bytes]]


def unpack(
    archive_path: Path,
    dest_dir: Path,
    *,
    max_bytes: int = MAX_BYTES,
    max_members: int = MAX_MEMBERS,
) -> Path:
    """Extract a .zip, .tar, .tar.gz or .tgz into the empty ``dest_dir``; returns the folder
    holding adapter_config.json (``dest_dir`` itself or its single top-level folder).

    Every member is vetted before anything is written; sizes are checked as declared and again
    as bytes come out. On refusal :class:`AdapterRejected` lists every problem and ``dest_dir``
    is left empty. Raises ``ValueError`` if ``dest_dir`` is not empty.
    """
    dest = _empty_folder(dest_dir)
    try:
        with _members(archive_path) as members:
            plan = _vet(members, dest, max_bytes, max_members)
            _extract(plan, dest, max_bytes)
        return _adapter_root(dest)
    except AdapterRejected:
        _clear(dest)
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error,
            NotImplementedError, OSError) as error:  # fmt: skip
        _clear(dest)
        problem = f"{archive_path.name}: cannot be read as an archive ({error})"
        raise AdapterRejected([problem]) from error


def _empty_folder(dest_dir: Path) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    if any(dest_dir.iterdir()):
        raise ValueError(f"{dest_dir} must be empty: leftovers would be taken for adapter files")
    return dest_dir.resolve()


@contextmanager
def _members(archive_path: Path) -> Iterator[Iterator[_Member]]:
    name = archive_path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive_path) as archive:
            yield _zip_members(archive)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(archive_path, "r:*") as tar:
            yield _tar_members(tar)
    else:
        raise AdapterRejected([f"{archive_path.name}: not a .zip, .tar, .tar.gz or .tgz archive"])


def _zip_members(archive: zipfile.ZipFile) -> Iterator[_Member]:
    for info in archive.infolist():
        mode = info.external_attr >> 16  # Unix mode bits, when a Unix tool made the zip
        if info.flag_bits & 0x1:
            kind = "an encrypted file"
        elif stat.S_ISLNK(mode):
            kind = "a symbolic link"
        elif info.is_dir() or stat.S_ISDIR(mode):
            kind = "folder"
        elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # no type bits: a plain file
            kind = "a device or other special file"
        else:
            kind = "file"
        yield _Member(info.filename, info.file_size, kind, partial(archive.open, info))


def _tar_members(tar: tarfile.TarFile) -> Iterator[_Member]:
    for info in tar:
        if info.issym():
            kind = f"a symbolic link to {info.linkname!r}"
        elif info.islnk():
            kind = f"a hard link to {info.linkname!r}"
        elif info.isdev():
            kind = "a device file or FIFO"
        elif info.isdir():
            kind = "folder"
        elif info.isfile():
            kind = "file"
        else:
            kind = f"an unsupported tar entry (type {info.type!r})"
        yield _Member(
            info.name, info.size if kind == "file" else 0, kind, partial(_tar_open, tar, info)
        )


def _tar_open(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    handle = tar.extractfile(info)
    if handle is None:  # only regular files get this far
        raise tarfile.TarError(f"{info.name!r} has no data")
    return handle


def _vet(members: Iterator[_Member], dest: Path, max_bytes: int, max_members: int) -> list[_Member]:
    """The members to write, or :class:`AdapterRejected` naming every bad one."""
    problems: list[str] = []
    plan: list[_Member] = []
    seen: set[str] = set()
    declared = 0
    for count, member in enumerate(members, start=1):
        if count > max_members:  # stop reading: a tar.gz lists members by decompressing
            problems.append(f"the archive holds more than {max_members} members")
            break
        problem = _name_problem(member.name, dest)
        if problem is None and member.kind not in ("file", "folder"):
            problem = f"is {member.kind}; only plain files and folders are extracted"
        if problem:
            problems.append(f"{member.name!r}: {problem}")
            continue
        path = _posix(member.name).strip("/")
        if member.kind == "file" and path in seen:
            problems.append(f"{member.name!r}: appears twice in the archive")
        seen.add(path)
        declared += member.size
        if declared > max_bytes:
            problems.append(f"the archive declares over {max_bytes} bytes uncompressed (the limit)")
            break
        if not _is_desktop_junk(path):
            plan.append(member)
    if problems:
        raise AdapterRejected(problems)
    return plan


def _name_problem(name: str, dest: Path) -> str | None:
    path = _posix(name)
    if not path.strip("/") or "\x00" in path:
        return "has an empty or invalid name"
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        return "is an absolute path; members must stay inside the archive's folder"
    if ".." in path.split("/"):
        return "climbs out of the destination with '..'"
    target = os.path.realpath(dest / path)
    if os.path.commonpath([dest, target]) != str(dest):
        return "would land outside the destination folder"
    return None


def _posix(name: str) -> str:
    return name.replace("\\", "/")  # zips made on Windows may use backslashes


def _is_desktop_junk(path: str) -> bool:
    """Finder metadata that macOS adds to archives; skipped rather than refused."""
    parts = path.split("/")
    return parts[0] == "__MACOSX" or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _extract(plan: list[_Member], dest: Path, max_bytes: int) -> None:
    written = 0
    for member in plan:
        target = dest / _posix(member.name).strip("/")
        if member.kind == "folder":
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with member.open() as source, target.open("xb") as sink:
            own = 0
            while chunk := source.read(_CHUNK):
                own, written = own + len(chunk), written + len(chunk)
                if own > member.size:
                    raise AdapterRejected(
                        [f"{member.name!r}: expands past the {member.size} bytes it declares"]
                    )
                if written > max_bytes:
                    raise AdapterRejected([f"the archive expands past {max_bytes} bytes"])
                sink.write(chunk)


def _adapter_root(dest: Path) -> Path:
    if (dest / _CONFIG).is_file():
        return dest
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / _CONFIG).is_file():
        return entries[0]
    raise AdapterRejected(
        [f"no {_CONFIG} at the top of the archive or inside its single top-level folder"]
    )


def _clear(dest: Path) -> None:
    for entry in dest.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
