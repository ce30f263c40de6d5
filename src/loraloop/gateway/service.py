"""One completion, from an authenticated caller to OpenAI-shaped output, metered and traced.

    caller + model ──resolve (per request)──▶ Target ──prompt, context check──▶ reserve tokens
        ──▶ engine (local base + adapter) or upstream ──pieces──▶ JSON body or SSE chunks
        ──finally (finished, failed, or the client went away)──▶ settle + usage + trace

Everything that must happen whatever the client does lives in the ``finally`` of the stream,
shielded from cancellation, so an abandoned stream is still charged for what it generated.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import anyio
import httpx2 as httpx
from sqlalchemy import insert

from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.db.tables import (
    ApiKey,
    Trace,
    User,
)
from loraloop.errors import InvalidRequest, LoraloopError, NotFound
from loraloop.gateway import apps, deployments, egress, metering, shapes
from loraloop.gateway.credentials import Vault
from loraloop.gateway.deployments import Step, Target
from loraloop.gateway.engines import Engines
from loraloop.gateway.upstream import UpstreamSource
from loraloop.identity import api_keys

__all__ = ["Call", "Caller", "Gateway", "Served"]

Endpoint = Literal["chat", "completions"]
_PRUNE_EVERY = 3600.0
_FIRST_TOKEN_SECONDS = 60.0  # a fallback member's default time to its first token
_SETTLE_SECONDS = 5.0  # an engine frees a cancelled request at its next step (milliseconds)
_TRACE = insert(Trace)  # Core, built once: one row per request needs no unit of work


@dataclass(frozen=True)
class Caller:
    """Who is asking: an API key's owner (``source="api"``) or a signed-in user."""

    user: User
    key: ApiKey | None = None
    source: Literal["api", "playground"] = "api"


@dataclass(frozen=True)
class Call:
    """A request, with the OpenAI parameters loraloop honours."""

    endpoint: Endpoint
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    max_tokens: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stream: bool = False
    include_usage: bool = False
    metadata: dict[str, str] | None = None
    """The request's ``metadata`` (an app's rules may route on it)."""
    given: frozenset[str] = frozenset()
    """Sampling fields the client set; an app's defaults fill the others."""

    def with_defaults(self, defaults: dict[str, Any]) -> Call:
        """This call with ``defaults`` for the sampling fields the client left unset."""
        unset = {k: v for k, v in defaults.items() if k not in self.given}
        return replace(self, **unset) if unset else self

    def sampling(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": self.stop,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }


class _Source(Protocol):
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    first_token_at: float | None

    @property
    def text(self) -> str: ...
    def cancel(self) -> None: ...
    def pieces(self) -> AsyncIterator[tuple[str, str | None]]: ...


class _LocalSource:
    """A :class:`~loraloop.ml.engine.Generation` as ``(text, finish_reason)`` pieces."""

    def __init__(self, generation: Any) -> None:
        self._generation = generation
        self.prompt_tokens: int = generation.prompt_tokens

    def __getattr__(self, name: str) -> Any:  # completion_tokens, text, finish_reason, ...
        return getattr(self._generation, name)

    @property
    def text(self) -> str:
        return _storable(self._generation.text)

    def cancel(self) -> None:
        self._generation.cancel()

    async def pieces(self) -> AsyncIterator[tuple[str, str | None]]:
        # a NUL reaches nobody: the caller gets what the trace keeps, so a playground that
        # saves the answer (request bodies refuse NUL) never fails on it
        async for delta in self._generation.stream():
            yield _storable(delta.text), delta.finish_reason

    async def settled(self) -> None:
        """Until the engine has let a cancelled request go (its slot free, its count final)."""
        if self._generation.finish_reason is not None:
            return
        with anyio.move_on_after(_SETTLE_SECONDS), contextlib.suppress(LoraloopError):
            async for _delta in self._generation.stream():  # replays, then waits for the end
                pass


@dataclass
class _Run:
    caller: Caller
    target: Target
    call: Call
    source: _Source
    reservation: metering.Reservation
    id: str
    started: float = field(default_factory=time.perf_counter)
    created: int = field(default_factory=lambda: int(time.time()))
    head: list[tuple[str, str | None]] = field(default_factory=list)
    """Pieces a fallback chain read ahead to see that this member answers."""
    rest: AsyncIterator[tuple[str, str | None]] | None = None

    async def pieces(self) -> AsyncIterator[tuple[str, str | None]]:
        for piece in self.head:
            yield piece
        async for piece in self.rest or self.source.pieces():
            yield piece


@dataclass(frozen=True)
class Served:
    """One finished completion, as observers of the gateway see it (``/metrics`` counts it):
    what kind of model answered, never who asked."""

    kind: Literal["base", "adapter", "app", "upstream"]
    endpoint: Endpoint
    status: str
    """``ok``, ``error`` or ``abandoned`` (the client went away)."""
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    first_token_seconds: float | None


class _NoAnswer(Exception):
    """A member of a fallback chain failed, timed out or answered nothing."""


class Gateway:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        engines: Engines,
        vault: Vault,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.db, self.settings, self.engines, self.vault = db, settings, engines, vault
        self.http = http or httpx.AsyncClient(follow_redirects=False)
        self._pruned_at = 0.0
        self.observers: list[Callable[[Served], None]] = []
        """Called with every completion once it is recorded (in a worker thread)."""

    def __repr__(self) -> str:
        return "Gateway()"

    # --- who and what ------------------------------------------------------------------------

    def authenticate(self, secret: str) -> Caller:
        user, key = api_keys.authenticate(self.db, secret, scope="inference")
        return Caller(user=user, key=key)

    def models(self, caller: Caller) -> list[dict[str, Any]]:
        """``/v1/models``: the caller's active deployments that the key may use."""
        with self.db.session() as session:
            rows = deployments.list_own(session, caller.user)
        return [
            {
                "id": r.name,
                "object": "model",
                "created": int(r.created_at.timestamp()),
                "owned_by": caller.user.display_name or "loraloop",
            }
            for r in rows
            if r.status == "active" and self._may_use(caller, r.name)
        ]

    def _may_use(self, caller: Caller, name: str) -> bool:
        return caller.key is None or api_keys.has_scope(caller.key, f"inference:{name}")

    def steps(self, caller: Caller, model: str, call: Call | None = None) -> list[Step]:
        """What to try for the caller's deployment ``model`` as it stands now (404 when not
        theirs): one target, or an app's members for this ``call``."""
        found = None
        if self._may_use(caller, model):
            with self.db.session() as session:
                found = deployments.serving_steps(
                    session,
                    self.settings,
                    self.vault,
                    caller.user,
                    model,
                    apps.Request.of(call) if call is not None else None,
                )
        if not found:
            raise NotFound(
                f"The model {model!r} does not exist or this key may not use it; "
                "GET /v1/models lists the ones it may",
                code="model_not_found",
                param="model",
            )
        return found

    # --- the completion ----------------------------------------------------------------------

    async def serve(
        self, caller: Caller, model: str, call: Call
    ) -> dict[str, Any] | AsyncIterator[str]:
        """:meth:`complete` on the caller's deployment ``model``, looked up as it stands now."""
        return await self._chain(caller, lambda: self.steps(caller, model, call), call)

    async def complete(
        self, caller: Caller, steps: Target | list[Step], call: Call
    ) -> dict[str, Any] | AsyncIterator[str]:
        """The whole answer as an OpenAI body, or (``call.stream``) its SSE lines."""
        planned = [Step(steps)] if isinstance(steps, Target) else steps
        return await self._chain(caller, lambda: planned, call)

    async def _chain(
        self, caller: Caller, plan: Callable[[], list[Step]], call: Call
    ) -> dict[str, Any] | AsyncIterator[str]:
        """Try each step until one answers: a fallback chain moves on when a member fails,
        times out before its first token or answers nothing; the last one answers anyway."""
        with anyio.CancelScope(shield=True):
            steps = await anyio.to_thread.run_sync(plan)
        tried: list[dict[str, Any]] = []
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            route = {**step.route, "fallbacks": list(tried)} if tried else step.route
            target = replace(step.target, route=route or None)
            attempt = call.with_defaults(step.defaults)
            try:
                return await self._answer(
                    lambda t=target, a=attempt: self._start(caller, t, a),  # type: ignore[misc]
                    probe=None if last else (step.timeout_seconds or _FIRST_TOKEN_SECONDS),
                )
            except _NoAnswer as exc:
                tried.append({"member": _member(step.route), "reason": str(exc)})
            except LoraloopError as exc:
                if last:
                    raise
                tried.append({"member": _member(step.route), "reason": exc.message})
        raise AssertionError("the last step answers or raises")  # pragma: no cover

    async def _answer(
        self, start: Callable[[], _Run], *, probe: float | None = None
    ) -> dict[str, Any] | AsyncIterator[str]:
        """``probe``: read ahead to the first text (at most that many seconds) and raise
        :class:`_NoAnswer` (after recording the attempt) when there is none."""
        # Everything before the first token (lookup, prompt, reservation, submit) is one trip to
        # a worker thread. Shielded: once started, the run must reach _finish to be settled.
        with anyio.CancelScope(shield=True):
            run = await anyio.to_thread.run_sync(start)
        try:
            await anyio.lowlevel.checkpoint_if_cancelled()
            if probe is not None:
                await self._probe(run, probe)
        except _NoAnswer as exc:
            with anyio.CancelScope(shield=True):
                await self._finish(run, "error", exc)
            raise
        except BaseException as exc:  # cancelled while it started: settle what it holds
            with anyio.CancelScope(shield=True):
                await self._finish(run, "abandoned", exc)
            raise
        if run.call.stream:
            return self._sse(run)
        text, finish = [], None
        try:
            async for piece, reason in run.pieces():
                text.append(piece)
                finish = reason or finish
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._finish(run, "abandoned" if _is_cancel(exc) else "error", exc)
            raise
        with anyio.CancelScope(shield=True):
            await self._finish(run, "ok", None)
        return _body(run, "".join(text), finish)

    async def _probe(self, run: _Run, seconds: float) -> None:
        """Read the run's pieces up to its first text; keep them for the answer."""
        run.rest = aiter(run.source.pieces())
        try:
            with anyio.fail_after(seconds):
                async for piece, reason in run.rest:
                    run.head.append((piece, reason))
                    if piece:
                        return
                    if reason is not None:
                        break
        except TimeoutError as exc:
            raise _NoAnswer(f"no first token within {seconds:g} s") from exc
        except LoraloopError as exc:
            raise _NoAnswer(exc.message) from exc
        except Exception as exc:  # an upstream's transport error, an engine failure
            raise _NoAnswer(f"{type(exc).__name__}: {exc}") from exc
        raise _NoAnswer("the answer was empty")

    def _start(self, caller: Caller, target: Target, call: Call) -> _Run:
        if target.upstream_url:
            return self._start_upstream(caller, target, call)
        return self._start_local(caller, target, call)

    def _start_local(self, caller: Caller, target: Target, call: Call) -> _Run:
        from loraloop.ml.engine import SamplingParams

        assert target.base_path is not None
        engine = self.engines.get(target.base_path)
        if call.endpoint == "chat":
            assert call.messages is not None
            prompt_ids = engine.chat_prompt(_with_system(call.messages, target.system_prompt))
        else:
            prompt_ids = engine.text_prompt(call.prompt or "")
        room = engine.context_length - len(prompt_ids)
        max_tokens = call.max_tokens or min(self.settings.default_max_tokens, room)
        if max_tokens < 1 or len(prompt_ids) + max_tokens > engine.context_length:
            raise InvalidRequest(
                f"This model's maximum context length is {engine.context_length} tokens, but "
                f"the request needs {len(prompt_ids)} prompt tokens + {max_tokens} for the "
                "completion; shorten the messages or lower max_tokens",
                code="context_length_exceeded",
                param="messages" if call.endpoint == "chat" else "prompt",
            )
        params = SamplingParams(max_tokens=max_tokens, **call.sampling())
        reservation = metering.reserve(self.db, caller.key, len(prompt_ids) + max_tokens)
        try:
            generation = engine.submit(prompt_ids, params, target.adapter)
        except BaseException:
            self._release(reservation)
            raise
        return _Run(caller, target, call, _LocalSource(generation), reservation, _new_id(call))

    def _start_upstream(self, caller: Caller, target: Target, call: Call) -> _Run:
        assert target.upstream_url is not None
        assert target.upstream_model is not None
        egress.check_address(target.upstream_url, allow_private=self.settings.egress_allow_private)
        body = call.sampling()
        unset = [k for k in ("seed", "stop", "top_k") if body[k] in (None, (), 0)]
        for name in unset:  # top_k is an extension an upstream may refuse
            del body[name]
        if call.stop:
            body["stop"] = list(call.stop)
        if call.endpoint == "chat":
            assert call.messages is not None
            body["messages"] = _with_system(call.messages, target.system_prompt)
        else:
            body["prompt"] = call.prompt or ""
        max_tokens = call.max_tokens or self.settings.default_max_tokens
        body["max_tokens"] = max_tokens
        estimate = len(json.dumps(body.get("messages") or body.get("prompt"))) // 3 + 1
        reservation = metering.reserve(self.db, caller.key, estimate + max_tokens)
        source = UpstreamSource(
            self.http,
            url=target.upstream_url,
            model=target.upstream_model,
            key=target.upstream_key,
            body=body,
            endpoint=call.endpoint,
            prompt_estimate=estimate,
            timeout=self.settings.upstream_timeout_seconds,
        )
        return _Run(caller, target, call, source, reservation, _new_id(call))

    def _release(self, reservation: metering.Reservation) -> None:
        with self.db.session() as session:
            metering.settle(session, reservation, 0)

    async def _sse(self, run: _Run) -> AsyncIterator[str]:
        status, error = "ok", None
        try:
            first = _chunk(run, {"role": "assistant", "content": ""}, None)
            if run.caller.source == "playground" and run.target.app_id is not None:
                # the playground shows which member of an app answers (not part of /v1)
                first["loraloop"] = {"route": run.target.route}
            yield shapes.event(first)
            async for piece, reason in run.pieces():
                if piece or reason:
                    yield shapes.event(_chunk(run, {"content": piece} if piece else {}, reason))
            if run.call.include_usage:
                yield shapes.event({**_chunk(run, None, None), "usage": shapes.usage(run.source)})
            yield "data: [DONE]\n\n"
        except Exception as exc:  # the engine or the upstream failed mid-stream
            status, error = "error", exc
            yield shapes.event({"error": shapes.error_body(exc)})
        except BaseException:  # the client went away: cancelled, or the generator closed
            status = "abandoned"
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(run, status, error)

    # --- bookkeeping -------------------------------------------------------------------------

    async def _finish(self, run: _Run, status: str, error: BaseException | None) -> None:
        if error is not None and _is_cancel(error):
            error = None
        run.source.cancel()
        if isinstance(run.source, _LocalSource):
            await run.source.settled()
        await anyio.to_thread.run_sync(self._record, run, status, error)

    def _record(self, run: _Run, status: str, error: BaseException | None) -> None:
        source, now = run.source, time.perf_counter()
        used = source.prompt_tokens + source.completion_tokens
        key_id = run.caller.key.id if run.caller.key else None
        with self.db.session() as session:
            metering.settle(session, run.reservation, used if status != "error" or used else 0)
            metering.record_usage(
                session,
                owner_id=run.caller.user.id,
                key_id=key_id,
                deployment_id=run.target.deployment_id,
                prompt_tokens=source.prompt_tokens,
                completion_tokens=source.completion_tokens,
                status=status,
            )
            session.connection().execute(
                _TRACE,
                {
                    "id": run.id,
                    "owner_id": run.caller.user.id,
                    "key_id": key_id,
                    "deployment_id": run.target.deployment_id,
                    "adapter_version_id": run.target.adapter_version_id,
                    "app_id": run.target.app_id,
                    "route": run.target.route,
                    "source": run.caller.source,
                    "endpoint": run.call.endpoint,
                    "model": run.target.model,
                    "request": _trace_request(run.call),
                    "response": _storable(source.text),
                    "finish_reason": source.finish_reason,
                    "status": status,
                    "error": getattr(error, "message", None)
                    or (str(error) if isinstance(error, _NoAnswer) else None)
                    or (type(error).__name__ if error else None),
                    "prompt_tokens": source.prompt_tokens,
                    "completion_tokens": source.completion_tokens,
                    "latency_ms": round((now - run.started) * 1000),
                    "ttft_ms": round((source.first_token_at - run.started) * 1000)
                    if source.first_token_at
                    else None,
                },
            )
            if time.monotonic() - self._pruned_at > _PRUNE_EVERY:
                self._pruned_at = time.monotonic()
                metering.prune(
                    session,
                    trace_days=self.settings.trace_retention_days,
                    usage_days=self.settings.usage_retention_days,
                )
        if self.observers:
            served = _served(run, status, now)
            for observe in self.observers:
                observe(served)


def _kind(target: Target) -> Literal["base", "adapter", "app", "upstream"]:
    if target.app_id is not None:
        return "app"
    if target.upstream_url:
        return "upstream"
    return "adapter" if target.adapter is not None else "base"


def _served(run: _Run, status: str, now: float) -> Served:
    source, first = run.source, run.source.first_token_at
    return Served(
        kind=_kind(run.target),
        endpoint=run.call.endpoint,
        status=status,
        prompt_tokens=source.prompt_tokens,
        completion_tokens=source.completion_tokens,
        seconds=now - run.started,
        first_token_seconds=first - run.started if first else None,
    )


def _member(route: dict[str, Any]) -> str | None:
    """The innermost member a route names (an app's member may be an app)."""
    while route.get("inner"):
        route = route["inner"]
    return route.get("member")


def _body(run: _Run, text: str, finish: str | None) -> dict[str, Any]:
    return shapes.completion(
        id=run.id,
        endpoint=run.call.endpoint,
        created=run.created,
        model=run.target.model,
        fingerprint=run.target.fingerprint,
        text=text,
        finish=finish or run.source.finish_reason or "stop",
        counts=run.source,
    )


def _chunk(run: _Run, delta: dict[str, str] | None, finish: str | None) -> dict[str, Any]:
    return shapes.chunk(
        id=run.id,
        endpoint=run.call.endpoint,
        created=run.created,
        model=run.target.model,
        fingerprint=run.target.fingerprint,
        delta=delta,
        finish=finish,
    )


def _storable(text: str) -> str:
    """A model can emit a NUL byte (a byte-level tokenizer's token 0); PostgreSQL text cannot
    hold one, so the answer and its trace carry U+FFFD in its place."""
    return text.replace("\x00", "\ufffd")


def _with_system(messages: list[dict[str, str]], system: str | None) -> list[dict[str, str]]:
    if system and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages


def _new_id(call: Call) -> str:
    return ("chatcmpl-" if call.endpoint == "chat" else "cmpl-") + secrets.token_hex(12)


def _is_cancel(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class() | GeneratorExit)


def _trace_request(call: Call) -> dict[str, Any]:
    request: dict[str, Any] = {
        "max_tokens": call.max_tokens,
        **call.sampling(),
        "stream": call.stream,
    }
    request["stop"] = list(call.stop)
    if call.messages is not None:
        request["messages"] = call.messages
    if call.prompt is not None:
        request["prompt"] = call.prompt
    return request
