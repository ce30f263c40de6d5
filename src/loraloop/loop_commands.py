"""``loraloop loop ...``: the maintenance loop of an adapter from the terminal.

Every command calls the same services as the web page and the REST API; none holds a rule.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import Adapter, RetrainPolicy, User
from loraloop.errors import LoraloopError
from loraloop.mlops import loop, policy, promotion, suites, timeline
from loraloop.storage import Storage
from loraloop.train_commands import UserOption, resolve_user

__all__ = ["loop_app"]

loop_app = typer.Typer(
    help="The maintenance loop: status, policy, evaluation suites, retrain, rollback.",
    no_args_is_help=True,
)
AdapterArg = Annotated[str, typer.Argument(help="Your adapter's name.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@contextmanager
def _owner(name: str, user: str | None) -> Iterator[tuple[Session, User, int, Settings]]:
    """A session, the owner and their adapter's id; service errors become CLI messages."""
    from loraloop import plugins
    from loraloop.cli import database, settings_or_exit

    settings = settings_or_exit()
    plugins.load(settings.plugins)  # a plugin's metric is as valid here as on the server
    db: Database = database(settings)
    owner = resolve_user(db, user)
    try:
        with db.session() as session:
            found = session.scalar(
                select(Adapter.id).where(Adapter.owner_id == owner.id, Adapter.name == name)
            )
            if found is None:
                raise _fail(f"you have no adapter named {name}")
            yield session, owner, found, settings
    except LoraloopError as exc:
        raise _fail(exc.message) from exc


@loop_app.command("status")
def status(adapter: AdapterArg, user: UserOption = None) -> None:
    """Champion and challenger, eval scores, live feedback, drift, the newest decisions."""
    with _owner(adapter, user) as (session, owner, adapter_id, _):
        view = timeline.overview(session, owner, adapter_id)
    named = ", ".join(f"{a} v{v}" for a, v in sorted(view["aliases"].items())) or "none"
    typer.echo(f"{adapter}: {named}")
    for row in view["scores"]:
        typer.echo(
            f"  eval   v{row['version']:<3} {row['suite']:<24} {row['metric']:<12} "
            f"{row['score']:.3f} ({row['cases']} cases)"
        )
    for row in view["live"]:
        typer.echo(f"  live   v{row['version']:<3} {row['bad']}/{row['rated']} rated answers bad")
    if view["drift"]:
        last = view["drift"][-1]
        typer.echo(
            f"  drift  after {last['requests']} requests: out-of-distribution "
            f"{(last['ood_share'] or 0):.0%}, MMD p={last['p_value']}, "
            f"alarm: {last['alarm'] or '-'}"
        )
    for cluster in view["clusters"][:3]:
        typer.echo(f"  new    {cluster['size']:>4} like: {' | '.join(cluster['examples'][:2])}")
    for d in view["decisions"][:5]:
        typer.echo(f"  gate   #{d['id']} v{d['challenger']} vs v{d['champion']}: {d['outcome']}")
        typer.echo(f"         {d['reason']}")
    for r in view["runs"][:5]:
        typer.echo(f"  run    #{r['id']} {r['trigger']:<9} {r['status']} {r['error'] or ''}")


@loop_app.command("policy")
def set_policy(
    adapter: AdapterArg,
    mode: Annotated[str | None, typer.Option(help="auto, propose or off.")] = None,
    min_new_examples: Annotated[
        int | None, typer.Option(help="Retrain after this many new accepted examples.")
    ] = None,
    every_hours: Annotated[int | None, typer.Option(help="Retrain on a schedule.")] = None,
    margin: Annotated[float | None, typer.Option(help="Gain the gate requires.")] = None,
    tolerance: Annotated[float | None, typer.Option(help="Regression a suite may show.")] = None,
    canary_share: Annotated[
        float | None, typer.Option(help="Share of traffic a passed challenger gets first.")
    ] = None,
    user: UserOption = None,
) -> None:
    """Show the retraining policy, or change it (fields you do not give keep their value)."""
    given: dict[str, Any] = {
        "mode": mode,
        "min_new_examples": min_new_examples,
        "every_hours": every_hours,
        "margin": margin,
        "tolerance": tolerance,
        "canary_share": canary_share,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    with _owner(adapter, user) as (session, owner, adapter_id, _):
        if changes:
            row = policy.update(session, owner, adapter_id, **changes)
        else:
            row = policy.get(session, owner, adapter_id)
        shown = {
            column.key: getattr(row, column.key)
            for column in RetrainPolicy.__table__.columns
            if column.key not in ("adapter_id", "updated_at")
        }
    typer.echo(json.dumps(shown, indent=2))


@loop_app.command("suite")
def add_suite(
    adapter: AdapterArg,
    name: Annotated[str, typer.Argument(help="The suite's name (made if new).")],
    cases: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, help='JSON Lines: {"prompt": ..., "expected": ...}'
        ),
    ],
    metric: Annotated[
        str, typer.Option(help="exact_match, contains, regex, rouge_l or a plugin's metric.")
    ] = "contains",
    user: UserOption = None,
) -> None:
    """Add evaluation cases from a JSON Lines file (errors name the line)."""
    rows, problems = _read_cases(cases)
    if problems:
        raise _fail("; ".join(problems[:10]))
    with _owner(adapter, user) as (session, owner, adapter_id, _):
        existing = {s.name: s for s, _count in suites.list_for(session, owner, adapter_id)}
        suite = existing.get(name) or suites.create(
            session, owner, adapter_id, name=name, metric=metric
        )
        try:
            added = suites.add_cases(session, owner, suite.id, rows)
        except LoraloopError as exc:  # "case N" is line N of the file: say so
            raise _fail(f"{cases}: {exc.message.replace('case ', 'line ')}") from exc
    typer.echo(f"suite {name}: added {len(added)} cases")


def _read_cases(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            problems.append(f"{path}:{number}: empty line")
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{path}:{number}: each line must be a JSON object")
            continue
        rows.append(value)
    if not rows and not problems:
        problems.append(f"{path}: the file has no cases")
    return rows, problems


@loop_app.command("retrain")
def retrain(adapter: AdapterArg, user: UserOption = None) -> None:
    """Retrain now on the dataset plus accepted corrections; the gate judges the result."""
    with _owner(adapter, user) as (session, owner, adapter_id, _):
        run = policy.retrain_now(session, owner, adapter_id)
    typer.echo(
        f"retrain run {run.id} approved; the maintenance loop starts it within "
        "maintenance_interval_seconds (or run `loraloop loop tick`)"
    )


@loop_app.command("challenge")
def challenge(
    adapter: AdapterArg,
    version: Annotated[int, typer.Argument(help="The version to put against the champion.")],
    user: UserOption = None,
) -> None:
    """Gate an existing version against the champion."""
    with _owner(adapter, user) as (session, owner, adapter_id, settings):
        run = policy.challenge(session, settings, owner, adapter_id, version)
    typer.echo(f"retrain run {run.id}: evaluation job {run.eval_job_id} queued")


@loop_app.command("rollback")
def rollback(
    adapter: AdapterArg,
    to: Annotated[
        int | None, typer.Option(help="Version to serve (default: the previous).")
    ] = None,
    user: UserOption = None,
) -> None:
    """Serve an earlier version again from the next request on."""
    with _owner(adapter, user) as (session, owner, adapter_id, _):
        version = promotion.rollback(session, owner, adapter_id, to)
    typer.echo(f"{adapter}: champion is v{version} again")


@loop_app.command("tick")
def tick() -> None:
    """Run one maintenance tick now: due drift checks, triggers, approved runs, canaries."""
    from loraloop.cli import database, settings_or_exit

    settings = settings_or_exit()
    try:
        with database(settings).session() as session:
            done = loop.tick(session, settings, Storage(settings.home / "artifacts"))
    except LoraloopError as exc:
        raise _fail(exc.message) from exc
    typer.echo(
        f"drift checks queued: {len(done.drift_checks)}, runs triggered: {len(done.triggered)}, "
        f"started: {len(done.started)}, closed: {len(done.closed)}, canaries: {done.canaries}"
    )
