"""Downloads of adapter versions: the PEFT folder as a zip that ``PeftModel.from_pretrained``
loads once unpacked (weights in safetensors, config, model card; nothing else leaves)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from sqlalchemy.orm import Session

from loraloop.catalog import adapters
from loraloop.db.tables import Adapter, User
from loraloop.errors import NotFound

__all__ = ["PEFT_FILES", "peft_zip"]

PEFT_FILES = ("adapter_model.safetensors", "adapter_config.json", "README.md", "training.json")


def peft_zip(session: Session, user: User, adapter_id: int, version: int) -> tuple[str, bytes]:
    """``(file name, zip bytes)`` of a version you can see."""
    row = adapters.get_version(session, user, adapter_id, version)
    adapter = session.get(Adapter, adapter_id)
    assert adapter is not None
    folder = Path(row.path)
    if not (folder / "adapter_model.safetensors").is_file():
        raise NotFound(f"the files of version {version} are gone from {folder.name}")
    name = f"{adapter.name}-v{version}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for file in PEFT_FILES:
            if (folder / file).is_file():
                archive.write(folder / file, f"{name}/{file}")
    return f"{name}.zip", buffer.getvalue()
