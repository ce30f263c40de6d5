"""Content-addressed artifacts under ``<home>/artifacts``: a file is stored once, named by its
SHA-256, written to a temporary name and renamed so readers never see half a file."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from loraloop.errors import InvalidRequest, NotFound, PayloadTooLarge

__all__ = ["Storage", "contained", "sha256_file"]

_SHA = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def contained(root: Path, candidate: Path) -> bool:
    """True when ``candidate`` resolves inside ``root`` (``data`` is not inside ``data_evil``)."""
    root_real, cand_real = os.path.realpath(root), os.path.realpath(candidate)
    return os.path.commonpath([root_real, cand_real]) == root_real


class Storage:
    def __init__(self, root: Path):
        self.root = root

    def path(self, sha256: str) -> Path:
        """Where the artifact with this hash lives; NotFound if it is not stored."""
        if not _SHA.match(sha256):
            raise InvalidRequest(f"{sha256!r} is not a SHA-256 hex digest", param="sha256")
        path = self.root / sha256[:2] / sha256
        if not path.is_file():
            raise NotFound(f"artifact {sha256} is not stored")
        return path

    def put_chunks(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> tuple[str, int]:
        """Store a stream, refusing it as soon as it passes ``max_bytes``; (sha256, size)."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest, size = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PayloadTooLarge(
                            f"the upload is larger than the {max_bytes} byte limit"
                        )
                    digest.update(chunk)
                    handle.write(chunk)
            sha = digest.hexdigest()
            final = self.root / sha[:2] / sha
            final.parent.mkdir(exist_ok=True)
            os.replace(tmp, final)
            return sha, size
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, path: Path) -> str:
        with path.open("rb") as handle:
            sha, _ = self.put_chunks(iter(lambda: handle.read(_CHUNK), b""))
        return sha

    def put_bytes(self, data: bytes) -> str:
        sha, _ = self.put_chunks([data])
        return sha

    def copy_out(self, sha256: str, destination: Path) -> Path:
        shutil.copyfile(self.path(sha256), destination)
        return destination
