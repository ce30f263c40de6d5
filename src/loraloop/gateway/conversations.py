"""Playground conversations, kept per user: what was said, to which model, with which settings.

Each assistant message may carry the ``trace_id`` of the answer, so feedback given later from
a reopened conversation still reaches the right trace.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loraloop.db.tables import Conversation, User
from loraloop.errors import InvalidRequest, NotFound

__all__ = ["create", "delete", "get_own", "list_own", "update"]

_ROLES = ("system", "user", "assistant")


def _check(title: str | None, messages: list[dict[str, Any]] | None) -> None:
    problems = []
    if title is not None and not 1 <= len(title.strip()) <= 120:
        problems.append("title must be 1 to 120 characters")
    for index, message in enumerate(messages or []):
        if message.get("role") not in _ROLES or not isinstance(message.get("content"), str):
            problems.append(
                f"messages[{index}] needs a role ({', '.join(_ROLES)}) and a text content"
            )
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_conversation")


def create(
    session: Session,
    user: User,
    *,
    title: str,
    target: dict[str, Any],
    settings: dict[str, Any],
    messages: list[dict[str, Any]],
) -> Conversation:
    _check(title, messages)
    row = Conversation(
        owner_id=user.id, title=title.strip(), target=target, settings=settings, messages=messages
    )
    session.add(row)
    session.flush()
    return row


def list_own(session: Session, user: User, limit: int = 50) -> list[Conversation]:
    query = select(Conversation).where(Conversation.owner_id == user.id)
    return list(session.scalars(query.order_by(Conversation.updated_at.desc()).limit(limit)))


def get_own(session: Session, user: User, conversation_id: int) -> Conversation:
    row = session.get(Conversation, conversation_id)
    if row is None or row.owner_id != user.id:
        raise NotFound(f"conversation {conversation_id} not found", param="conversation_id")
    return row


def update(
    session: Session,
    user: User,
    conversation_id: int,
    *,
    title: str | None = None,
    target: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    messages: list[dict[str, Any]] | None = None,
) -> Conversation:
    row = get_own(session, user, conversation_id)
    _check(title, messages)
    if title is not None:
        row.title = title.strip()
    if target is not None:
        row.target = target
    if settings is not None:
        row.settings = settings
    if messages is not None:
        row.messages = messages
    session.flush()
    return row


def delete(session: Session, user: User, conversation_id: int) -> None:
    session.delete(get_own(session, user, conversation_id))
