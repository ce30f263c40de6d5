"""Pushing an adapter version, or one of its finished exports, to a Hugging Face repo.

    version folder (PEFT files) ──┐
    export folder (merged, GGUF) ─┴─▶ staging/ (hard links + a model card) ──push_folder──▶ repo

The push runs while the request waits, because the token must live nowhere but in that
request's memory: it is handed to the two hub calls and dropped, never written to the database,
a job payload or a log. Only the adapter's owner may push.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from sqlalchemy.orm import Session

from loraloop.catalog import adapters, base_models, exports, huggingface
from loraloop.catalog.huggingface import Pushed
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, User
from loraloop.errors import InvalidRequest, NotFound

__all__ = ["push"]

_CARD = "README.md"


def push(
    db: Database,
    settings: Settings,
    user: User,
    adapter_id: int,
    version: int,
    *,
    repo_id: str,
    token: str,
    private: bool = True,
    export_id: int | None = None,
    commit_message: str | None = None,
) -> Pushed:
    """Commit the version's PEFT files (or export ``export_id``'s files) to ``repo_id``,
    creating the repo (private by default) when it does not exist."""
    with db.session() as session:  # short: the upload below holds no transaction
        files, card, label = _what(session, settings, user, adapter_id, version, export_id)
    problems = huggingface.repo_problems(repo_id, param="repo_id")
    if not 1 <= len(token) <= 512:
        problems.append("token: must be 1-512 characters (a hub access token with write access)")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_push", param="repo_id")
    stage = settings.home / "pushes" / f".stage-{secrets.token_hex(8)}"
    stage.mkdir(parents=True)
    try:
        for path in files:
            _link(path, stage / path.name)
        if not (stage / _CARD).exists():
            (stage / _CARD).write_text(card, encoding="utf-8")
        return huggingface.push_folder(
            stage,
            repo_id,
            token=token,
            endpoint=settings.hub_endpoint,
            private=private,
            commit_message=commit_message or f"Upload {label} with loraloop",
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _what(
    session: Session,
    settings: Settings,
    user: User,
    adapter_id: int,
    version: int,
    export_id: int | None,
) -> tuple[list[Path], str, str]:
    """The files to push, a model card for a folder without one, and what they are."""
    adapter = adapters.get_own(session, user, adapter_id)
    row = adapters.get_version(session, user, adapter_id, version)
    base = base_models.get(session, adapter.base_model_id)
    label = f"{adapter.name} v{version}"
    if export_id is None:
        folder = Path(row.path)
        files = [folder / name for name in exports.PEFT_FILES if (folder / name).is_file()]
        if not (folder / "adapter_model.safetensors").is_file():
            raise NotFound(f"the files of version {version} are gone", param="version")
        return files, _card(adapter, version, "peft", base.hub_id), f"{label} (PEFT adapter)"
    view = exports.get(session, user, adapter_id, version, export_id)
    files = exports.ready_files(view)
    card = _card(adapter, version, view.row.format, base.hub_id)
    return files, card, f"{label} ({view.row.format})"


def _link(source: Path, target: Path) -> None:
    """A hard link (no bytes copied for a multi-GB model), or a copy across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _card(adapter: Adapter, version: int, kind: str, base_hub_id: str | None) -> str:
    """A minimal model card the hub shows and indexes (front matter per the hub's spec)."""
    meta = [f"base_model: {base_hub_id}"] if base_hub_id else []
    if kind == "peft":
        meta.append("library_name: peft")
    tags = {"peft": "lora", "merged": "merged", "gguf": "gguf"}[kind]
    use = {
        "peft": "Load it with `PeftModel.from_pretrained(base_model, '<this repo>')`.",
        "merged": "Load it with `AutoModelForCausalLM.from_pretrained('<this repo>')`.",
        "gguf": "Run it with llama.cpp, or with Ollama: `ollama create "
        f"{adapter.name} -f Modelfile` in a folder holding this repo's files.",
    }[kind]
    lines = [
        "---",
        *meta,
        f"license: {adapter.licence}",
        f"tags: [loraloop, {tags}]",
        "---",
        "",
        f"# {adapter.name} (version {version})",
        "",
        adapter.description or "A LoRA adapter made with loraloop.",
        "",
        use,
        "",
    ]
    return "\n".join(lines)
