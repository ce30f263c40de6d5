"""The ASGI application: REST API, web pages and (optionally) the local worker."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from loraloop import __version__
from loraloop.api import errors
from loraloop.api.limits import BodyLimit
from loraloop.api.metrics import Metrics, RecordRequests
from loraloop.api.request_ids import RequestIds
from loraloop.api.routes import (
    admin,
    auth,
    catalog,
    community,
    datasets,
    deployments,
    feedback,
    health,
    hub,
    interop,
    jobs,
    keys,
    maintenance,
    openai,
    playground,
    providers,
    wallet,
)
from loraloop.api.routes import metrics as metrics_routes
from loraloop.api.routes import rewards as rewards_routes
from loraloop.api.routes import worker as worker_routes
from loraloop.config import Settings
from loraloop.db.engine import Database
from loraloop.gateway.credentials import Vault
from loraloop.gateway.engines import EngineLike, Engines
from loraloop.gateway.service import Gateway
from loraloop.jobs.runner import LocalWorker
from loraloop.mlops.loop import Maintenance
from loraloop.plugins import load as load_plugins
from loraloop.rewards.onchain import RewardChain
from loraloop.storage import Storage

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    db: Database | None = None,
    *,
    local_worker: bool = False,
    run_maintenance: bool = False,
    engine_factory: Callable[[Path], EngineLike] | None = None,
) -> FastAPI:
    """Build the app. ``local_worker`` runs queued jobs inside this process (``loraloop up``);
    ``run_maintenance`` runs the maintenance loop's clock (drift checks, retraining, canaries);
    ``engine_factory`` replaces the inference engine (benchmarks measure the gateway alone)."""
    db = db or Database(settings.resolved_database_url)
    worker = LocalWorker(db, lease_seconds=settings.job_lease_seconds) if local_worker else None
    gateway = Gateway(db, settings, Engines(settings, engine_factory), Vault(settings.secret()))
    metrics = Metrics(db, gateway)
    storage = Storage(settings.home / "artifacts")
    rewards = RewardChain(db, settings)
    clock = Maintenance(db, settings, storage, duties=[rewards.tick]) if run_maintenance else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for started in (worker, clock):
            if started is not None:
                started.start()
        try:
            yield
        finally:
            for started in (clock, worker):
                if started is not None:
                    started.stop()
            await gateway.http.aclose()
            gateway.engines.close()

    app = FastAPI(
        title="loraloop",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        description="Train, serve and maintain small domain models.",
    )
    app.state.settings = settings
    app.state.db = db
    app.state.storage = storage
    app.state.gateway = gateway
    app.state.rewards = rewards
    app.state.plugins = load_plugins(settings.plugins)  # a broken plugin is logged, not fatal
    app.state.metrics = metrics
    errors.install(app)
    # /v1 first: the hot path should not be matched against every other route before it
    routers = (
        health,
        auth,
        keys,
        jobs,
        admin,
        catalog,
        community,
        datasets,
        deployments,
        hub,
        interop,
        maintenance,
        playground,
        providers,
        rewards_routes,
        wallet,
    )
    for module in (openai, feedback, *routers, worker_routes):
        app.include_router(module.router)
    app.include_router(metrics_routes.router)
    from loraloop.web import pages  # the web layer sits beside the API, not below it

    pages.install(app)
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_body_bytes,
        exempt_prefixes=("/api/datasets", "/api/worker/uploads", "/api/adapters/import"),
    )
    # outermost (added last): every request is counted and has its id, even a refused one
    app.add_middleware(RecordRequests, metrics=metrics)
    app.add_middleware(RequestIds)
    return app
