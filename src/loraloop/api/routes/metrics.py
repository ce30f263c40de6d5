"""``/metrics``: the Prometheus text format, for an admin or the holder of ``metrics_token``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from loraloop.api.deps import AppSettings, bearer_secret, optional_auth
from loraloop.api.metrics import Metrics
from loraloop.errors import NotFound, Unauthenticated
from loraloop.identity.tokens import same

__all__ = ["router"]

router = APIRouter(tags=["operations"])


def _reader(request: Request, settings: AppSettings) -> None:
    """A scraper holds ``metrics_token`` (compared in constant time); anyone else must be an
    admin. Members get 404, as on every admin route, so the endpoint does not show."""
    token = settings.metrics_token.get_secret_value()
    secret = bearer_secret(request)
    if token and secret is not None and same(secret, token):
        return
    auth = optional_auth(request, settings)
    if auth is None:
        raise Unauthenticated(
            "send the metrics token or an admin's API key as 'Authorization: Bearer ...'",
            code="not_signed_in",
        )
    if auth.user.role != "admin":
        raise NotFound("no such endpoint; see /docs for the API")


MetricsReader = Annotated[None, Depends(_reader)]


@router.get("/metrics", response_class=Response)
def metrics(request: Request, _reader: MetricsReader) -> Response:
    """This server's metrics in the Prometheus text format (see docs/operations.md)."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
