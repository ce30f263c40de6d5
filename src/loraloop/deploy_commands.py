"""``loraloop deploy ...``: serve an adapter (or a base, or an upstream) as a ``/v1`` model id."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from sqlalchemy import select

from loraloop.db.tables import Adapter
from loraloop.errors import LoraloopError
from loraloop.gateway import deployments
from loraloop.gateway.credentials import Vault
from loraloop.train_commands import UserOption, resolve_user

__all__ = ["deploy_app"]

deploy_app = typer.Typer(
    help="Deployments: the model ids of the OpenAI-compatible API.", no_args_is_help=True
)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@deploy_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The model id clients will send.")],
    adapter: Annotated[str | None, typer.Option(help="Adapter name (yours) to serve.")] = None,
    version: Annotated[int | None, typer.Option(help="Pin this version of the adapter.")] = None,
    alias: Annotated[
        str | None, typer.Option(help="Follow an alias instead (default: champion).")
    ] = None,
    base: Annotated[int | None, typer.Option(help="Serve this base model id, bare.")] = None,
    upstream_url: Annotated[str | None, typer.Option(help="An OpenAI-compatible …/v1 URL.")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="The upstream's model id.")] = None,
    upstream_key_env: Annotated[
        str | None, typer.Option(help="Name of an environment variable holding the upstream key.")
    ] = None,
    system: Annotated[str | None, typer.Option(help="A system prompt for every request.")] = None,
    user: UserOption = None,
) -> None:
    """Create a deployment and print how to call it."""
    from loraloop.cli import database, settings_or_exit

    settings = settings_or_exit()
    db = database(settings)
    owner = resolve_user(db, user)
    upstream_key = os.environ.get(upstream_key_env) if upstream_key_env else None
    if upstream_key_env and upstream_key is None:
        raise _fail(f"the environment variable {upstream_key_env} is not set")
    try:
        with db.session() as session:
            adapter_id = None
            if adapter is not None:
                found = session.scalar(
                    select(Adapter).where(Adapter.owner_id == owner.id, Adapter.name == adapter)
                )
                if found is None:
                    raise _fail(f"you have no adapter named {adapter}")
                adapter_id = found.id
                alias = alias or (None if version else "champion")
            row = deployments.create(
                session,
                owner,
                Vault(settings.secret()),
                name=name,
                adapter_id=adapter_id,
                version=version,
                alias=alias,
                base_model_id=base,
                upstream_url=upstream_url,
                upstream_model=upstream_model,
                upstream_key=upstream_key,
                system_prompt=system,
                allow_private=settings.egress_allow_private,
            )
            label = deployments.target_label(session, row)
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    typer.echo(f"deployment {row.id}: {name} -> {label}")
    typer.echo(
        f"call it at http://{settings.host}:{settings.port}/v1 with model={name!r} and a "
        "key from `loraloop keys create`"
    )


@deploy_app.command("list")
def list_(user: UserOption = None) -> None:
    """Your deployments and what each one serves."""
    from loraloop.cli import database, settings_or_exit

    db = database(settings_or_exit())
    owner = resolve_user(db, user)
    with db.session() as session:
        rows = deployments.list_own(session, owner)
        lines = [
            f"{r.id:>5}  {r.name:<24} {r.status:<7} {deployments.target_label(session, r)}"
            for r in rows
        ]
    typer.echo("\n".join(lines) if lines else "no deployments")


def _change(deployment_id: int, user: str | None, status: str | None) -> None:
    from loraloop.cli import database, settings_or_exit

    db = database(settings_or_exit())
    owner = resolve_user(db, user)
    try:
        with db.session() as session:
            if status is None:
                deployments.delete(session, owner, deployment_id)
            else:
                deployments.set_status(session, owner, deployment_id, status)
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    typer.echo(f"deployment {deployment_id} {status or 'deleted'}")


@deploy_app.command("pause")
def pause(deployment_id: int, user: UserOption = None) -> None:
    """Stop serving (requests get 409) until resumed."""
    _change(deployment_id, user, "paused")


@deploy_app.command("resume")
def resume(deployment_id: int, user: UserOption = None) -> None:
    """Serve again."""
    _change(deployment_id, user, "active")


@deploy_app.command("delete")
def delete(deployment_id: int, user: UserOption = None) -> None:
    """Delete a deployment (its traces and usage stay)."""
    _change(deployment_id, user, None)
