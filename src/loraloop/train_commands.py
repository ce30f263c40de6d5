"""``loraloop train`` and ``loraloop chat``: the terminal way to make and try an adapter.

``train`` uploads the data as a dataset version, queues a training job and runs it with a
worker in this process (a running ``loraloop up`` may pick it up instead), drawing progress
from the job's events. Ctrl-C stops the run; ``--resume JOB`` continues from its checkpoint.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from loraloop.catalog import adapters, base_models
from loraloop.config import Settings
from loraloop.db import Database
from loraloop.db.tables import Adapter, AdapterVersion, BaseModel, Job, JobEvent, User
from loraloop.errors import LoraloopError
from loraloop.jobs.runner import LocalWorker
from loraloop.jobs.states import TERMINAL
from loraloop.ml.models import DEFAULT_BASE
from loraloop.storage import Storage

__all__ = ["chat", "train"]

UserOption = Annotated[
    str | None, typer.Option("--user", help="Email of the owner (default: the only admin).")
]


def _context() -> tuple[Settings, Database]:
    from loraloop.cli import database, settings_or_exit

    settings = settings_or_exit()
    return settings, database(settings)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def resolve_user(db: Database, email: str | None) -> User:
    """The named account, or the only admin when none is named."""
    from loraloop.identity.accounts import normalise_email

    with db.session() as session:
        if email:
            user = session.scalar(select(User).where(User.email == normalise_email(email)))
            if user is None:
                raise _fail(f"no account with email {email}")
            return user
        admins = list(session.scalars(select(User).where(User.role == "admin")).all())
    if len(admins) != 1:
        raise _fail("say whose adapter this is with --user EMAIL (there is not exactly one admin)")
    return admins[0]


def _adapter(db: Database, settings: Settings, owner: User, name: str, base: str) -> Adapter:
    with db.session() as session:
        existing = session.scalar(
            select(Adapter).where(Adapter.owner_id == owner.id, Adapter.name == name)
        )
        if existing is not None:
            return existing
        known = session.scalar(select(BaseModel.id).where(BaseModel.name == base))
    if known is None and base == DEFAULT_BASE:
        typer.echo("preparing the default base model (converted once, about 30 s)...")
        known = base_models.register_default(db, settings).id
    with db.session() as session:
        base_id = known if known is not None else base_models.get_by_name(session, base).id
        return adapters.create(session, owner, name=name, base_model_id=base_id)


def _upload(
    db: Database, settings: Settings, owner: User, name: str, data: Path, fmt: str | None
) -> int:
    from loraloop import plugins
    from loraloop.datasets import service

    plugins.load(settings.plugins)  # a plugin's dataset format reads here as on the server
    with data.open("rb") as handle, db.session() as session:
        version = service.upload(
            session,
            Storage(settings.home / "artifacts"),
            owner,
            name=name,
            chunks=iter(lambda: handle.read(1 << 20), b""),
            format=fmt,
            max_bytes=settings.max_upload_bytes,
        )
        typer.echo(
            f"dataset {name} v{version.version}: {version.train_examples} training and "
            f"{version.validation_examples} validation examples "
            f"({version.duplicates_removed} duplicates removed)"
        )
        return int(version.dataset_id)


def _line(event: dict[str, Any]) -> str | None:
    if "step" not in event:
        return str(event["message"]) if "message" in event else None
    parts = [f"step {event['step']}/{event['total_steps']}", f"loss {event['loss']:.4f}"]
    if event.get("val_loss") is not None:
        parts.append(f"val {event['val_loss']:.4f}")
    if event.get("tokens_per_s"):
        parts.append(f"{event['tokens_per_s']:.0f} tok/s")
    eta = int(event.get("eta_s") or 0)
    parts.append(f"ETA {eta // 60}m{eta % 60:02d}s")
    return "  ".join(parts)


def follow(db: Database, job_id: int, worker: LocalWorker) -> Job:
    """Print the job's progress until it ends."""
    seen = 0
    while True:
        with db.session() as session:
            events = session.scalars(
                select(JobEvent)
                .where(JobEvent.job_id == job_id, JobEvent.seq > seen)
                .order_by(JobEvent.seq)
            ).all()
            job = session.get(Job, job_id)
        for event in events:
            seen = event.seq
            line = _line(event.data)
            if line:
                typer.echo(line)
        assert job is not None
        if job.status in TERMINAL:
            return job
        time.sleep(0.5)


def train(
    data: Annotated[
        Path | None,
        typer.Option(help="JSON Lines file: messages, Alpaca, ShareGPT or prompt/completion."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="Adapter (and dataset) name.")] = None,
    base: Annotated[
        str, typer.Option(help="Base model name (see GET /api/base-models).")
    ] = DEFAULT_BASE,
    preset: Annotated[str, typer.Option(help="quick, balanced or thorough.")] = "balanced",
    epochs: Annotated[float | None, typer.Option(help="Override the preset's epochs.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    data_format: Annotated[
        str | None, typer.Option("--format", help="Force the data format.")
    ] = None,
    resume: Annotated[
        int | None, typer.Option(help="Continue an interrupted training job by id.")
    ] = None,
    user: UserOption = None,
) -> None:
    """Train a LoRA adapter on a local file, showing progress; resumable."""
    settings, db = _context()
    owner = resolve_user(db, user)
    storage = Storage(settings.home / "artifacts")
    try:
        if resume is not None:
            job_id = resume
        else:
            if data is None or name is None:
                raise _fail("give --data FILE and --name NAME (or --resume JOB)")
            if not data.is_file():
                raise _fail(f"{data} is not a file")
            adapter = _adapter(db, settings, owner, name, base)
            dataset_id = _upload(db, settings, owner, name, data, data_format)
            options = {
                k: v for k, v in {"epochs": epochs, "max_steps": max_steps}.items() if v is not None
            }
            with db.session() as session:
                job_id = adapters.start_training(
                    session,
                    settings,
                    storage,
                    owner,
                    adapter.id,
                    dataset_id=dataset_id,
                    preset=preset,
                    options=options,
                ).id
            typer.echo(f"training job {job_id} queued")
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    worker = LocalWorker(db, worker_id="cli", lease_seconds=settings.job_lease_seconds)
    worker.start()
    try:
        job = follow(db, job_id, worker)
    except KeyboardInterrupt:
        worker.stop()
        typer.echo(f"\ninterrupted; continue with: loraloop train --resume {job_id}")
        raise typer.Exit(code=130) from None
    worker.stop()
    if job.status != "succeeded":
        raise _fail(f"training job {job_id} {job.status}: {job.error}")
    with db.session() as session:
        version = session.scalar(select(AdapterVersion).where(AdapterVersion.job_id == job_id))
    assert version is not None
    typer.secho(f"adapter version {version.version} ready: {version.path}", fg=typer.colors.GREEN)
    typer.echo(", ".join(f"{k} {_short(v)}" for k, v in version.metrics.items() if v is not None))


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def chat(
    adapter: Annotated[str, typer.Argument(help="Adapter name (yours).")],
    version: Annotated[int | None, typer.Option(help="Version (default: the latest).")] = None,
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    user: UserOption = None,
) -> None:
    """Talk to an adapter in the terminal (/reset starts over, /exit or Ctrl-D leaves)."""
    settings, db = _context()
    owner = resolve_user(db, user)
    with db.session() as session:
        row = session.scalar(
            select(Adapter).where(Adapter.owner_id == owner.id, Adapter.name == adapter)
        )
        if row is None:
            raise _fail(f"you have no adapter named {adapter}")
        versions = adapters.versions(session, owner, row.id)
        chosen = [v for v in versions if version is None or v.version == version]
        if not chosen:
            raise _fail(f"{adapter} has no version {version or '(train it first)'}")
        base_path = base_models.absolute_path(settings, base_models.get(session, row.base_model_id))
    from loraloop.ml.generate import Conversation

    conversation = Conversation.load(base_path, Path(chosen[-1].path), system=system)
    typer.echo(f"{adapter} v{chosen[-1].version} — /reset to start over, /exit to leave")
    while True:
        try:
            prompt = input("> ")
        except EOFError:
            break
        if prompt.strip() in ("/exit", "/quit"):
            break
        if prompt.strip() == "/reset":
            conversation.reset()
            continue
        for piece in conversation.reply(prompt, max_new_tokens=max_new_tokens):
            typer.echo(piece, nl=False)
        typer.echo()
