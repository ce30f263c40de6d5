"""The ``loraloop`` command: start the platform, migrate, and manage admins and API keys."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select

from loraloop import (
    __version__,
    contrib_commands,
    deploy_commands,
    loop_commands,
    train_commands,
)
from loraloop.config import Settings
from loraloop.db import Database, upgrade
from loraloop.db.tables import User
from loraloop.errors import LoraloopError, NotFound
from loraloop.identity import accounts, api_keys

app = typer.Typer(
    help="loraloop: train, serve and maintain small domain models.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
admin_app = typer.Typer(help="Administrators.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (acting for a user given by email).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(keys_app, name="keys")

Host = Annotated[
    str | None, typer.Option(help="Address to bind (default LORALOOP_HOST or 127.0.0.1).")
]
Port = Annotated[int | None, typer.Option(help="Port (default LORALOOP_PORT or 8000).")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    except ValueError as exc:  # pydantic: a bad LORALOOP_* value
        raise _fail(f"invalid setting: {exc}") from exc


def database(settings: Settings) -> Database:
    db = Database(settings.resolved_database_url)
    upgrade(db.engine)
    return db


def _version(value: bool) -> None:
    if value:
        typer.echo(f"loraloop {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Train LoRA adapters on open models, serve them, and keep them accurate."""


def _prepare_default_base(db: Database, settings: Settings) -> None:
    """Convert and register the default base model in the background (once, ~30 s)."""
    from loraloop.catalog import base_models

    try:
        row = base_models.register_default(db, settings)
    except Exception as exc:  # the server stays useful without it; say why
        typer.secho(f"  default base model unavailable: {exc}", fg=typer.colors.YELLOW, err=True)
        return
    typer.echo(f"  default base model ready: {row.name} ({row.parameters / 1e6:.0f}M parameters)")


def _run(settings: Settings, *, local_worker: bool) -> None:
    import uvicorn

    from loraloop import logs
    from loraloop.api.app import create_app

    settings.secret()  # generated into the data folder on first start
    db = database(settings)
    url = f"http://{settings.host}:{settings.port}"
    with db.session() as session:
        invite = (
            None
            if accounts.has_admin(session)
            else accounts.create_invite(session, created_by=None, role="admin", days=1)
        )
    threading.Thread(target=_prepare_default_base, args=(db, settings), daemon=True).start()
    typer.secho(f"loraloop {__version__} is starting at {url}", fg=typer.colors.GREEN, bold=True)
    typer.echo(f"  data folder: {settings.home.resolve()}")
    if invite is not None:
        typer.echo("  No admin yet. Create the first admin account (one-time link, valid 24 h):")
        typer.secho(f"    {url}/signup?invite={invite.code}", bold=True)
        typer.echo("  or run: loraloop admin create --email you@example.com")
    else:
        typer.echo(f"  Open {url} and sign in.")
    app_ = create_app(settings, db, local_worker=local_worker, run_maintenance=True)
    logs.configure(settings.log_format)
    uvicorn.run(
        app_,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=None,  # logs.configure set up every logger, uvicorn's included
        proxy_headers=False,
    )


@app.command()
def up(host: Host = None, port: Port = None) -> None:
    """Start everything in one process: web UI, API and a local worker."""
    _run(settings_or_exit(host=host, port=port), local_worker=True)


@app.command()
def serve(host: Host = None, port: Port = None) -> None:
    """Start the web UI and API without a local worker (run workers separately)."""
    _run(settings_or_exit(host=host, port=port), local_worker=False)


@app.command()
def worker(
    server: Annotated[str, typer.Option(help="The loraloop server, e.g. https://loraloop.example")],
    token: Annotated[
        str | None,
        typer.Option(help="A provider key (or set LORALOOP_PROVIDER_TOKEN).", show_default=False),
    ] = None,
    name: Annotated[str | None, typer.Option(help="This node's name (default: hostname).")] = None,
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where inputs, runs and the base model are kept [./loraloop-worker]."),
    ] = None,
    once: Annotated[bool, typer.Option(help="Run one job, then exit.")] = False,
) -> None:
    """Lend this machine to a loraloop server: pull jobs over HTTP, run them, upload results."""
    import logging
    import os
    import signal
    import socket

    from loraloop.worker.agent import Agent

    secret = token or os.environ.get("LORALOOP_PROVIDER_TOKEN")
    if not secret:
        typer.secho("error: give --token or set LORALOOP_PROVIDER_TOKEN", fg="red", err=True)
        raise typer.Exit(code=1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per long-poll
    agent = Agent(
        server,
        secret,
        name=name or socket.gethostname(),
        workdir=(workdir or Path("loraloop-worker")).resolve(),
        once=once,
    )
    signal.signal(signal.SIGTERM, lambda *_: agent.stop.set())
    typer.echo(f"loraloop worker {__version__}: serving {server} from {agent.workdir}")
    try:
        agent.run()
    except KeyboardInterrupt:
        agent.stop.set()
    except Exception as exc:  # say what went wrong in one line, not a traceback
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(code=1) from exc


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply every pending migration."""
    settings = settings_or_exit()
    database(settings)
    typer.echo(f"database at {settings.resolved_database_url.split('@')[-1]} is up to date")


@admin_app.command("create")
def admin_create(
    email: Annotated[str, typer.Option(help="Email address to sign in with.")],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    password: Annotated[
        str,
        typer.Option(
            prompt=True, hide_input=True, confirmation_prompt=True, help="At least 10 characters."
        ),
    ] = "",
) -> None:
    """Create an administrator account."""
    db = database(settings_or_exit())
    try:
        with db.session() as session:
            user = accounts.create_user(
                session, email=email, password=password, display_name=name, role="admin"
            )
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    typer.echo(f"admin {user.email} created; sign in on the web page")


def _user(db: Database, email: str) -> User:
    with db.session() as session:
        user = session.scalar(select(User).where(User.email == accounts.normalise_email(email)))
    if user is None:
        raise _fail(f"no account with email {email}")
    return user


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="Email of the key's owner.")],
    name: Annotated[str, typer.Option(help="A name you will recognise.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(help="Repeatable: inference:*, inference:<deployment>, manage, worker."),
    ] = None,
    rate_limit: Annotated[int, typer.Option(help="Requests per minute.")] = 60,
    expires_days: Annotated[int | None, typer.Option(help="Expire after this many days.")] = None,
    tpm: Annotated[
        int | None, typer.Option(help="Tokens per minute (prompt + completion).")
    ] = None,
    token_budget: Annotated[int | None, typer.Option(help="Lifetime tokens for this key.")] = None,
) -> None:
    """Issue an API key; the secret is printed once."""
    db = database(settings_or_exit())
    owner = _user(db, user)
    try:
        with db.session() as session:
            issued = api_keys.create(
                session,
                owner,
                name=name,
                scopes=scope,
                rate_limit_per_minute=rate_limit,
                expires_in_days=expires_days,
                tokens_per_minute=tpm,
                token_budget=token_budget,
            )
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    typer.echo(f"key {issued.key.id} ({issued.key.prefix}) scopes {', '.join(issued.key.scopes)}")
    typer.echo("secret (shown once, store it now):")
    typer.secho(issued.secret, bold=True)


@keys_app.command("list")
def keys_list(user: Annotated[str, typer.Option("--user", help="Email of the owner.")]) -> None:
    """List a user's keys (never their secrets)."""
    db = database(settings_or_exit())
    owner = _user(db, user)
    with db.session() as session:
        keys = api_keys.list_own(session, owner)
    if not keys:
        typer.echo("no keys")
    for key in keys:
        state = "revoked" if key.revoked_at else "active"
        expires = key.expires_at.date().isoformat() if key.expires_at else "never"
        scopes = ", ".join(key.scopes)
        typer.echo(
            f"{key.id:>5}  {key.prefix:<16} {state:<8} expires {expires:<10} {key.name}  [{scopes}]"
        )


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id from `keys list`.")],
    user: Annotated[str, typer.Option("--user", help="Email of the owner.")],
) -> None:
    """Revoke a key immediately."""
    db = database(settings_or_exit())
    owner = _user(db, user)
    try:
        with db.session() as session:
            key = api_keys.revoke(session, owner, key_id)
    except NotFound as exc:
        raise _fail(exc.message) from exc
    typer.echo(f"key {key.id} ({key.prefix}) revoked")


app.command()(train_commands.train)
app.command()(train_commands.chat)
app.add_typer(deploy_commands.deploy_app, name="deploy")
app.add_typer(loop_commands.loop_app, name="loop")
app.add_typer(contrib_commands.contrib_app, name="contrib")

if __name__ == "__main__":
    app()
