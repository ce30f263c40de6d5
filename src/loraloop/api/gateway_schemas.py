"""Bodies of ``/v1`` (OpenAI's shapes), the playground, deployments and aliases.

The ``/v1`` requests accept the OpenAI parameters loraloop honours and the harmless ones
clients send by habit (``n=1``, ``user``, ``logprobs=false``); anything else is refused by
name rather than silently ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from loraloop.api.schemas import Public, Strict
from loraloop.gateway.service import Call

__all__ = [
    "AliasPublic",
    "AliasSet",
    "ChatRequest",
    "CompletionRequest",
    "ConversationCreate",
    "ConversationPublic",
    "ConversationUpdate",
    "DeploymentCreate",
    "DeploymentPublic",
    "PlaygroundChat",
]

_Text = Annotated[str, Field(max_length=200_000)]


class _Part(Strict):
    type: Literal["text"]
    text: _Text


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: _Text | list[_Part]
    name: str | None = Field(default=None, max_length=64)

    def plain(self) -> dict[str, str]:
        text = (
            self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(Strict):
    include_usage: bool = False


class _Sampling(Strict):
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float = Field(default=1.0, ge=0, le=2)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0, le=1000, description="0: off (a vLLM-style extension)")
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**63)
    stop: str | list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, description="Up to 4 sequences; the answer ends before the first one."
    )
    presence_penalty: float = Field(default=0.0, ge=-2, le=2)
    frequency_penalty: float = Field(default=0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError(f"at most 4 stop sequences, got {len(value)}")
        if value == "":
            raise ValueError("a stop sequence cannot be empty")
        return value

    def call(self, endpoint: Literal["chat", "completions"], **content: Any) -> Call:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        given = set(self.model_fields_set)
        if "max_completion_tokens" in given:
            given.add("max_tokens")
        return Call(
            given=frozenset(given),
            endpoint=endpoint,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=stop,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            stream=self.stream,
            include_usage=bool(self.stream_options and self.stream_options.include_usage),
            **content,
        )


class _Habits(Strict):
    """Parameters clients send by default; only their neutral values are accepted."""

    n: int = Field(default=1, ge=1, le=1, description="Only 1 choice per request.")
    user: str | None = Field(default=None, max_length=256)
    logprobs: bool | None = Field(default=None)

    @model_validator(mode="after")
    def _no_logprobs(self) -> _Habits:
        if self.logprobs:
            raise ValueError("logprobs are not supported; leave logprobs unset or false")
        return self


class ChatRequest(_Sampling, _Habits):
    model: str = Field(min_length=1, max_length=200)
    messages: list[Message] = Field(min_length=1, max_length=1000)
    metadata: (
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None
    ) = Field(
        default=None, max_length=16, description="Up to 16 pairs; an app's rules may route on them."
    )

    def to_call(self) -> Call:
        return self.call(
            "chat", messages=[m.plain() for m in self.messages], metadata=self.metadata
        )


class CompletionRequest(_Sampling, _Habits):
    model: str = Field(min_length=1, max_length=200)
    prompt: _Text | list[_Text] = Field(description="A string (or a list holding one).")
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError(f"send one prompt per request, got {len(value)}")
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported; leave it false")
        return value

    def to_call(self) -> Call:
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return self.call("completions", prompt=prompt)


class PlaygroundChat(_Sampling):
    """Talk to a deployment, any adapter version you can see, or a base model."""

    deployment: str | None = Field(default=None, max_length=64)
    adapter_id: int | None = Field(default=None, ge=1)
    version: int | None = Field(default=None, ge=1, description="Default: the champion.")
    base_model_id: int | None = Field(default=None, ge=1)
    messages: list[Message] = Field(min_length=1, max_length=1000)
    stream: bool = True

    def to_call(self) -> Call:
        return self.call("chat", messages=[m.plain() for m in self.messages])


class DeploymentCreate(Strict):
    name: str = Field(min_length=1, max_length=64, description="The model id clients send.")
    adapter_id: int | None = Field(default=None, ge=1)
    version: int | None = Field(default=None, ge=1, description="Pin one version...")
    alias: Literal["champion", "challenger"] | None = Field(
        default=None, description="...or follow an alias: promotions move traffic."
    )
    base_model_id: int | None = Field(default=None, ge=1)
    upstream_url: str | None = Field(
        default=None, max_length=500, description="An OpenAI-compatible base URL (…/v1)."
    )
    upstream_model: str | None = Field(default=None, max_length=200)
    upstream_key: str | None = Field(
        default=None, max_length=2000, description="Stored encrypted; never returned."
    )
    system_prompt: str | None = Field(default=None, max_length=20_000)
    app: dict[str, Any] | None = Field(
        default=None,
        description="An app over your other deployments: {type: single|router|fallback, "
        "members: [{deployment, name?, description?, timeout_seconds?}], rules?, semantic?, "
        "default?, system_prompt?, defaults?}",
    )


class DeploymentPublic(Public):
    id: int
    name: str
    kind: str
    status: str
    target: str = Field(description="What it serves, e.g. kumo-coffee@champion.")
    adapter_id: int | None
    alias: str | None
    base_model_id: int | None
    upstream_url: str | None
    upstream_model: str | None
    has_upstream_key: bool
    system_prompt: str | None
    app: dict[str, Any] | None = None
    created_at: datetime


class AliasSet(Strict):
    version: int = Field(ge=1)


class AliasPublic(Public):
    adapter_id: int
    alias: str
    version: int


class ConversationMessage(Strict):
    role: Literal["system", "user", "assistant"]
    content: _Text
    trace_id: str | None = Field(default=None, max_length=40)
    model: str | None = Field(default=None, max_length=200)


class ConversationCreate(Strict):
    title: str = Field(min_length=1, max_length=120)
    target: dict[str, Any] = Field(default_factory=dict, description="What it talks to.")
    settings: dict[str, Any] = Field(default_factory=dict, description="System prompt, sampling.")
    messages: list[ConversationMessage] = Field(default_factory=list, max_length=1000)


class ConversationUpdate(Strict):
    title: str | None = Field(default=None, min_length=1, max_length=120)
    target: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    messages: list[ConversationMessage] | None = Field(default=None, max_length=1000)


class ConversationPublic(Public):
    id: int
    title: str
    target: dict[str, Any]
    settings: dict[str, Any]
    messages: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
