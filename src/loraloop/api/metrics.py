"""Prometheus metrics of one app, served at ``/metrics`` (docs/operations.md lists them).

    request ──RecordRequests (method, route template, status, seconds)──▶ counters, histogram
    gateway ──Served (model kind, tokens, seconds, first token)──▶ counters, histograms
    job queue ──Finished (kind, outcome, seconds), after its commit──▶ counter, histogram
    scrape ──_QueueDepth (one GROUP BY) + _EngineStats (each engine's stats())──▶ gauges

Each app has its own :class:`~prometheus_client.CollectorRegistry`, so tests can build many
apps. Every label has a bounded set of values: routes are templates (``/api/jobs/{job_id}``,
never the path with its ids), models are kinds (base, adapter, app, upstream), never users or
keys. Nothing touches the database per request; the queue is counted when scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, Counter, Histogram, Info, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loraloop import __version__
from loraloop.db.engine import Database
from loraloop.db.tables import Job
from loraloop.gateway.engines import Engines
from loraloop.gateway.service import Gateway, Served
from loraloop.jobs import kinds, queue
from loraloop.jobs.states import ACTIVE, Status

__all__ = ["Metrics", "RecordRequests"]

log = logging.getLogger(__name__)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_UNMATCHED = "unmatched"  # no route: a 404, or refused before routing (a body too large)
_GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_FIRST_TOKEN_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_JOB_BUCKETS = (1, 5, 15, 60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600, 24 * 3600)
_QUEUE_STATES = (Status.queued, *ACTIVE)
_DEPTH = (
    select(Job.kind, Job.status, func.count())
    .where(Job.status.in_([s.value for s in _QUEUE_STATES]))
    .group_by(Job.kind, Job.status)
)
_ENGINE_GAUGES = {
    "running": "Sequences in the running batch now (the continuous batch's size).",
    "waiting": "Sequences waiting for a free batch slot.",
    "cached_adapters": "Adapters held in the engine's adapter cache.",
    "cache_bytes": "Bytes held by the engine's adapter cache.",
    "kv_cache_bytes": "Bytes held by the engine's KV cache.",
}
_ENGINE_COUNTERS = {
    "steps": "Forward passes (decode steps) run by the engine since it loaded.",
    "generated_tokens": "Tokens sampled by the engine since it loaded; divided by steps, "
    "the mean batch size.",
}


class Metrics:
    """The app's registry and instruments; ``observe`` hooks feed them from the gateway and
    the job queue."""

    def __init__(self, db: Database, gateway: Gateway) -> None:
        self.registry = CollectorRegistry()
        Info("loraloop_build", "The running loraloop version.", registry=self.registry).info(
            {"version": __version__}
        )
        self.requests = Counter(
            "loraloop_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "loraloop_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte, by route template.",
            ["route"],
            registry=self.registry,
        )
        self._gateway_instruments()
        self._job_instruments()
        self.registry.register(_QueueDepth(db))
        self.registry.register(_EngineStats(gateway.engines))
        gateway.observers.append(self.served)
        # for as long as the database lives (one per app in a server, one per test in tests)
        event.listen(db.sessions, "after_commit", self._committed)
        event.listen(db.sessions, "after_transaction_end", _forget_finished)

    def _gateway_instruments(self) -> None:
        self.completions = Counter(
            "loraloop_completions",
            "Completions on /v1 (and the playground), by model kind, endpoint and status.",
            ["kind", "endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "loraloop_prompt_tokens",
            "Prompt tokens of completions, by model kind.",
            ["kind"],
            registry=self.registry,
        )
        self.completion_tokens = Counter(
            "loraloop_completion_tokens",
            "Completion tokens generated, by model kind.",
            ["kind"],
            registry=self.registry,
        )
        self.generation = Histogram(
            "loraloop_generation_duration_seconds",
            "Time from a completion's submission (engine or upstream) to its end, by model kind.",
            ["kind"],
            buckets=_GENERATION_BUCKETS,
            registry=self.registry,
        )
        self.first_token = Histogram(
            "loraloop_time_to_first_token_seconds",
            "Time from a completion's submission to its first token, by model kind.",
            ["kind"],
            buckets=_FIRST_TOKEN_BUCKETS,
            registry=self.registry,
        )

    def _job_instruments(self) -> None:
        self.jobs_finished = Counter(
            "loraloop_jobs_finished",
            "Jobs that reached an end state, by kind and outcome.",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.job_duration = Histogram(
            "loraloop_job_duration_seconds",
            "Time from a job's (last) start to its end, by kind and outcome.",
            ["kind", "outcome"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )

    # --- hooks -------------------------------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def served(self, served: Served) -> None:
        """A gateway observer: one finished completion."""
        kind = served.kind
        self.completions.labels(kind, served.endpoint, served.status).inc()
        self.prompt_tokens.labels(kind).inc(served.prompt_tokens)
        self.completion_tokens.labels(kind).inc(served.completion_tokens)
        self.generation.labels(kind).observe(served.seconds)
        if served.first_token_seconds is not None:
            self.first_token.labels(kind).observe(served.first_token_seconds)

    def _committed(self, session: Session) -> None:
        """After a commit: count the jobs its transaction finished (a rolled-back one, none)."""
        for job in session.info.get(queue.FINISHED, ()):
            self.jobs_finished.labels(job.kind, job.status).inc()
            if job.seconds is not None:
                self.job_duration.labels(job.kind, job.status).observe(max(job.seconds, 0.0))

    def render(self) -> bytes:
        """The registry in the Prometheus text format (runs the scrape-time collectors)."""
        return generate_latest(self.registry)


def _forget_finished(session: Session, transaction: SessionTransaction) -> None:
    """The outermost transaction ended (after ``after_commit``, or rolled back): whatever it
    finished was counted or never happened."""
    if transaction.parent is None:
        session.info.pop(queue.FINISHED, None)


class RecordRequests:
    """Pure ASGI middleware counting each request under its route template.

    The template is read from ``scope["route"]`` after routing, so the label set is the app's
    routes (a mount as ``/static/{path}``) plus ``unmatched``; a request that raised counts as
    the 500 Starlette answers, and one whose client left before any response as 499."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root = scope.get("root_path", "")
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except anyio.get_cancelled_exc_class():
            status = status or 499
            raise
        except BaseException:
            status = status or 500
            raise
        finally:
            self.metrics.request(
                scope["method"],
                _template(scope, root),
                status or 500,
                time.perf_counter() - started,
            )


def _template(scope: Scope, root: str) -> str:
    """The matched route's path template; a mount (``/static``) as ``/static/{path}``."""
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    mounted = scope.get("root_path", "")
    if isinstance(mounted, str) and mounted != root:
        return mounted.removeprefix(root) + "/{path}"
    return _UNMATCHED


class _QueueDepth:
    """Jobs waiting or in progress, per kind and state: one GROUP BY over unfinished jobs (the
    claim index leads with ``status``) at each scrape; ``loraloop_database_up`` says whether it
    could be read."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "loraloop_database_up", "1 when the database answered this scrape, else 0."
        )
        depth = GaugeMetricFamily(
            "loraloop_jobs",
            "Jobs queued, leased or running, by kind and status.",
            labels=["kind", "status"],
        )
        try:
            with self._db.session() as session:
                rows = session.execute(_DEPTH).all()
        except SQLAlchemyError:
            log.warning("metrics: the job queue could not be counted", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        counts = {(str(kind), str(status)): int(n) for kind, status, n in rows}
        for kind in sorted({*kinds.KINDS, *(k for k, _ in counts)}):
            for state in _QUEUE_STATES:
                depth.add_metric([kind, state.value], counts.get((kind, state.value), 0))
        up.add_metric([], 1)
        yield up
        yield depth


class _EngineStats:
    """Each loaded inference engine's own counters, read at scrape time: the engine (``ml/``)
    knows nothing of Prometheus, it only answers ``stats()``."""

    def __init__(self, engines: Engines) -> None:
        self._engines = engines

    def collect(self) -> Iterator[Metric]:
        loaded = self._engines.stats()
        names = _base_labels(list(loaded))
        gauges = {
            key: GaugeMetricFamily(f"loraloop_engine_{key}", text, labels=["base"])
            for key, text in _ENGINE_GAUGES.items()
        }
        counters = {
            key: CounterMetricFamily(f"loraloop_engine_{key}", text, labels=["base"])
            for key, text in _ENGINE_COUNTERS.items()
        }
        families: dict[str, Any] = {**gauges, **counters}
        for path, stats in loaded.items():
            for key, family in families.items():
                value = stats.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    family.add_metric([names[path]], value)
        yield from families.values()


def _base_labels(paths: list[Path]) -> dict[Path, str]:
    """The folder name of each base model, or its whole path where two names clash."""
    names = [p.name for p in paths]
    unique = len(set(names)) == len(names)
    return {p: p.name if unique else str(p) for p in paths}
