"""The playground's chat: the same engine and stream as ``/v1``, for a signed-in user."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter

from loraloop.api.deps import AppSettings, CurrentUser, DbSession
from loraloop.api.gateway_schemas import (
    ConversationCreate,
    ConversationPublic,
    ConversationUpdate,
    PlaygroundChat,
)
from loraloop.api.routes.openai import AppGateway, respond
from loraloop.gateway import apps, conversations, deployments
from loraloop.gateway.service import Caller

router = APIRouter(prefix="/api/playground", tags=["playground"])


@router.post("/chat", response_model=None)
async def playground_chat(
    body: PlaygroundChat, user: CurrentUser, gateway: AppGateway, settings: AppSettings
) -> Any:
    """Chat with a deployment, an adapter version you can see, or a base model (streams)."""

    call = body.to_call()

    def steps() -> list[deployments.Step]:
        with gateway.db.session() as session:
            return deployments.playground_steps(
                session,
                settings,
                gateway.vault,
                user,
                deployment=body.deployment,
                adapter_id=body.adapter_id,
                version=body.version,
                base_model_id=body.base_model_id,
                request=apps.Request.of(call),
            )

    caller = Caller(user=user, source="playground")
    return await respond(gateway, caller, await anyio.to_thread.run_sync(steps), call)


@router.get("/conversations")
def list_conversations(user: CurrentUser, session: DbSession) -> list[ConversationPublic]:
    """Your playground conversations, most recently changed first."""
    return [ConversationPublic.model_validate(c) for c in conversations.list_own(session, user)]


@router.post("/conversations", status_code=201)
def create_conversation(
    body: ConversationCreate, user: CurrentUser, session: DbSession
) -> ConversationPublic:
    """Keep a conversation so it can be reopened later."""
    row = conversations.create(session, user, **body.model_dump())
    return ConversationPublic.model_validate(row)


@router.get("/conversations/{conversation_id}")
def get_conversation(
    conversation_id: int, user: CurrentUser, session: DbSession
) -> ConversationPublic:
    """One of your conversations (404 for anyone else's)."""
    return ConversationPublic.model_validate(conversations.get_own(session, user, conversation_id))


@router.put("/conversations/{conversation_id}")
def update_conversation(
    conversation_id: int, body: ConversationUpdate, user: CurrentUser, session: DbSession
) -> ConversationPublic:
    """Replace the title, target, settings or messages of a conversation."""
    row = conversations.update(
        session, user, conversation_id, **body.model_dump(exclude_unset=True)
    )
    return ConversationPublic.model_validate(row)


@router.delete("/conversations/{conversation_id}", status_code=204)
def delete_conversation(conversation_id: int, user: CurrentUser, session: DbSession) -> None:
    """Delete a conversation (its traces and feedback stay)."""
    conversations.delete(session, user, conversation_id)
