"""``/v1``: the OpenAI-compatible surface. Authenticated by an API key with an inference scope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from loraloop.api.deps import bearer_secret
from loraloop.api.gateway_schemas import ChatRequest, CompletionRequest
from loraloop.errors import NotFound, Unauthenticated
from loraloop.gateway.service import Call, Caller, Gateway

__all__ = ["AppGateway", "respond", "router"]

router = APIRouter(prefix="/v1", tags=["openai"])


async def _gateway(request: Request) -> Gateway:
    # async although it awaits nothing: FastAPI runs a plain function in a worker thread
    gateway: Gateway = request.app.state.gateway
    return gateway


AppGateway = Annotated[Gateway, Depends(_gateway)]


def _caller(request: Request, gateway: AppGateway) -> Caller:
    secret = bearer_secret(request)
    if secret is None:
        raise Unauthenticated(
            "You didn't provide an API key. Send it as 'Authorization: Bearer ll_...' "
            "(create one on the API keys page)",
            code="invalid_api_key",
        )
    return gateway.authenticate(secret)


ApiCaller = Annotated[Caller, Depends(_caller)]


async def respond(gateway: Gateway, caller: Caller, steps: Any, call: Call) -> Any:
    """Run ``call`` on ``steps`` and answer with JSON, or with server-sent events."""
    return _response(await gateway.complete(caller, steps, call))


def _response(result: dict[str, Any] | AsyncIterator[str]) -> Any:
    if isinstance(result, dict):
        return JSONResponse(result)
    return StreamingResponse(
        result,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/models")
def list_models(caller: ApiCaller, gateway: AppGateway) -> dict[str, Any]:
    """The deployments this key may call."""
    return {"object": "list", "data": gateway.models(caller)}


@router.get("/models/{model}")
def get_model(model: str, caller: ApiCaller, gateway: AppGateway) -> dict[str, Any]:
    """One deployment this key may call."""
    for entry in gateway.models(caller):
        if entry["id"] == model:
            return entry
    raise NotFound(f"The model {model!r} does not exist", code="model_not_found", param="model")


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatRequest, caller: ApiCaller, gateway: AppGateway) -> Any:
    """Chat with a deployment; ``stream: true`` sends server-sent events."""
    return _response(await gateway.serve(caller, body.model, body.to_call()))


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, caller: ApiCaller, gateway: AppGateway) -> Any:
    """Continue a plain-text prompt (no chat template)."""
    return _response(await gateway.serve(caller, body.model, body.to_call()))
