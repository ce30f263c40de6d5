"""``loraloop contrib ...``: contribute to adapters, review, and see your points.

The CLI works on this machine's data folder, as the account given with ``--user``. Every
command calls the same services as the web page and the REST API. A review's verdict and
salt stay in ``<home>/reviews/`` (readable by you only) between commit and reveal.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.contributions import items, reputation, review, standings
from loraloop.db.tables import User
from loraloop.errors import LoraloopError
from loraloop.storage import Storage
from loraloop.train_commands import resolve_user

__all__ = ["contrib_app"]

contrib_app = typer.Typer(
    help="Community work: offer examples and eval cases, review, see points.",
    no_args_is_help=True,
)
AdapterId = Annotated[int, typer.Argument(help="The adapter's id (see its page).")]
UserOption = Annotated[str | None, typer.Option("--user", help="Your account's email.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@contextmanager
def _as(user: str | None) -> Iterator[tuple[Session, User, Settings, Storage]]:
    from loraloop.cli import database, settings_or_exit

    settings = settings_or_exit()
    db = database(settings)
    me = resolve_user(db, user)
    try:
        with db.session() as session:
            yield session, me, settings, Storage(settings.home / "artifacts")
    except LoraloopError as exc:
        raise _fail(exc.message) from exc


def _lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """Every line of a JSON Lines file, or exit naming each bad line (nothing is sent)."""
    rows, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not JSON ({exc.msg})")
            continue
        if not isinstance(value, dict):
            problems.append(f"{path}:{number}: each line must be a JSON object")
            continue
        rows.append((number, value))
    if problems:
        raise _fail("\n".join(problems[:20]))
    if not rows:
        raise _fail(f"{path}: the file has no items")
    return rows


@contrib_app.command("add")
def add(
    adapter: AdapterId,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines.")],
    kind: Annotated[str, typer.Option(help="example or eval_case.")] = "example",
    source: Annotated[str | None, typer.Option(help="Where the items come from.")] = None,
    user: UserOption = None,
) -> None:
    """Offer every line of FILE. Duplicates are refused one by one (the line is named); the
    other lines still go in."""
    rows = _lines(file)
    offered, refused, stopped = 0, [], None
    with _as(user) as (session, me, settings, storage):
        for number, item in rows:
            if stopped:
                break
            try:
                with session.begin_nested():
                    row = items.submit(
                        session,
                        settings,
                        storage,
                        me,
                        adapter,
                        kind=kind,
                        item=item,
                        source=source,
                        via="cli",
                    )
                offered += 1
                typer.echo(f"line {number}: contribution #{row.id} {row.status}")
            except LoraloopError as exc:
                if exc.status_code == 404:
                    raise _fail(exc.message) from exc
                if exc.status_code == 429:
                    stopped = f"line {number} and after were not sent: {exc.message}"
                else:
                    refused.append(f"line {number}: {exc.message}")
    for line in refused:
        typer.secho(line, fg=typer.colors.YELLOW, err=True)
    typer.echo(f"{offered} offered, {len(refused)} refused")
    if stopped:
        raise _fail(stopped)
    if refused and not offered:
        raise typer.Exit(code=1)


@contrib_app.command("list")
def list_mine(user: UserOption = None) -> None:
    """What you offered, newest first."""
    with _as(user) as (session, me, _, _):
        for row in items.list_mine(session, me):
            asked = items.user_text(row.messages).replace("\n", " ")[:60]
            reason = f" ({row.reason})" if row.reason else ""
            typer.echo(
                f"#{row.id:<5} adapter {row.adapter_id:<4} {row.kind:<10} "
                f"{row.status:<9} {asked}{reason}"
            )


@contrib_app.command("join")
def join(
    adapter: AdapterId,
    leave: Annotated[bool, typer.Option("--leave", help="Leave the pool instead.")] = False,
    user: UserOption = None,
) -> None:
    """Join an adapter's reviewer pool (or leave it)."""
    with _as(user) as (session, me, _, _):
        items.enrol(session, me, adapter, reviewer=not leave)
    typer.echo(f"{'left' if leave else 'joined'} the reviewers of adapter {adapter}")


def _salts(settings: Settings, me: User) -> Path:
    folder = settings.home / "reviews"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder / f"user-{me.id}.json"


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8")) if path.exists() else {}


def _save(path: Path, kept: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(kept, handle)


@contrib_app.command("reviews")
def reviews(user: UserOption = None) -> None:
    """The reviews you were drawn for."""
    with _as(user) as (session, me, _, _):
        tasks = review.queue(session, me)
        for task in tasks:
            state = (
                "reveal open" if task.item.reveal_opened_at is not None else task.assignment.state
            )
            typer.echo(
                f"review {task.assignment.id} ({task.item.kind}, {state}, due "
                f"{task.assignment.due_at:%Y-%m-%d %H:%M} UTC)"
            )
            for m in task.item.messages:
                typer.echo(f"  {m['role']}: {m['content']}")
            if task.item.expected is not None:
                typer.echo(f"  expected ({task.item.metric}): {task.item.expected}")
    if not tasks:
        typer.echo("no reviews waiting for you")


@contrib_app.command("vote")
def vote(
    assignment: Annotated[int, typer.Argument(help="The review's number.")],
    verdict: Annotated[str, typer.Argument(help="accept, reject or fix.")],
    answer: Annotated[str | None, typer.Option(help="With fix: the corrected answer.")] = None,
    user: UserOption = None,
) -> None:
    """Commit to a verdict (only its hash is sent); `contrib reveal` reveals it later."""
    if verdict not in review.VERDICTS:
        raise _fail(f"verdict must be one of {', '.join(review.VERDICTS)}")
    if (verdict == "fix") != (answer is not None):
        raise _fail("give --answer with fix, and only with fix")
    with _as(user) as (session, me, settings, _):
        edited = None
        if answer is not None:
            task = next(
                (t for t in review.queue(session, me) if t.assignment.id == assignment), None
            )
            if task is None:
                raise _fail(f"review {assignment} is not waiting for you")
            *asked, _last = task.item.messages
            edited = [*asked, {"role": "assistant", "content": answer}]
        salt = secrets.token_hex(16)
        review.commit(
            session,
            settings,
            me,
            assignment,
            review.commitment_of(assignment, verdict, salt, edited),
        )
        path = _salts(settings, me)
        kept = _load(path)
        kept[str(assignment)] = {"verdict": verdict, "salt": salt, "edited": edited}
        _save(path, kept)
    typer.echo(f"review {assignment}: committed; reveal once every reviewer has committed")


@contrib_app.command("reveal")
def reveal(user: UserOption = None) -> None:
    """Reveal every committed verdict whose reveal is open."""
    with _as(user) as (session, me, settings, _):
        path = _salts(settings, me)
        kept = _load(path)
        open_now = {
            t.assignment.id
            for t in review.queue(session, me)
            if t.assignment.state == "committed" and t.item.reveal_opened_at is not None
        }
        shown = 0
        for key in sorted(kept, key=int):
            if int(key) not in open_now:
                continue
            saved = kept[key]
            review.reveal(
                session,
                settings,
                me,
                int(key),
                verdict=saved["verdict"],
                salt=saved["salt"],
                edited=saved["edited"],
            )
            del kept[key]
            shown += 1
        _save(path, kept)
    typer.echo(f"revealed {shown}; {len(kept)} still waiting for other reviewers")


@contrib_app.command("points")
def points(
    adapter: Annotated[int | None, typer.Option(help="Only this adapter.")] = None,
    user: UserOption = None,
) -> None:
    """Your reputation, points, and where every point came from."""
    with _as(user) as (session, me, _, _):
        standing = reputation.standing(session, me.id)
        total, lines = standings.my_points(session, me, adapter_id=adapter)
    s = standing.as_dict()
    typer.echo(
        f"reputation {s['reputation']} (vote weight {s['weight']}"
        f"{', on probation' if s['on_probation'] else ''}); points {total / 1000:.3f}"
    )
    for line in lines:
        b = line.entry.breakdown
        factors = ", ".join(
            f"{k} {v}" for k, v in b.items() if k not in ("formula", "points") and v is not None
        )
        source = line.source or {}
        typer.echo(
            f"  {line.entry.millipoints / 1000:>8.3f}  {line.entry.kind:<12} "
            f"{source.get('type', '?')} #{source.get('id', '?')}: {b.get('formula')} "
            f"({factors})"
        )
