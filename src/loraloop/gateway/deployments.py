"""Deployments: the model ids that ``/v1`` serves, and what each one points at right now.

    deployment ──adapter + version──▶ that version, always
               ──adapter + alias────▶ whatever version the alias names at request time
               ──base model─────────▶ the bare base
               ──upstream───────────▶ an external OpenAI-compatible server (vLLM --enable-lora, ...)

:func:`resolve` runs per request, so moving ``champion`` moves traffic on the next request,
while a stream already running keeps the version it started with. An alias deployment with a
``canary_share`` sends that share of its requests to the adapter's challenger instead.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases, base_models
from loraloop.config import Settings
from loraloop.db.tables import Adapter, AdapterAlias, AdapterVersion, BaseModel, Deployment, User
from loraloop.errors import Conflict, InvalidRequest, NotFound
from loraloop.gateway import egress
from loraloop.gateway.credentials import Vault
from loraloop.ml.engine import AdapterRef

__all__ = [
    "STATUSES",
    "Step",
    "Target",
    "by_name",
    "create",
    "delete",
    "get_own",
    "list_own",
    "playground_steps",
    "resolve",
    "serving_steps",
    "serving_target",
    "set_status",
    "steps_of",
    "target_label",
    "update_app",
]

#: The same alphabet as an API key's ``inference:<deployment>`` scope.
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
STATUSES = ("active", "paused")


@dataclass(frozen=True)
class Target:
    """What one request runs on: a local base (+ adapter), or an upstream."""

    model: str
    """The model id the client asked for, echoed back in responses."""
    deployment_id: int | None = None
    base_path: Path | None = None
    adapter: AdapterRef | None = None
    adapter_version_id: int | None = None
    upstream_url: str | None = None
    upstream_model: str | None = None
    upstream_key: str | None = None
    system_prompt: str | None = None
    app_id: int | None = None
    """The app the client called, when this target is one of its members."""
    route: dict[str, Any] | None = None
    """Why this member answers (the rule, the similarity, fallbacks tried before)."""

    def __repr__(self) -> str:  # the upstream key never reaches a log line
        return f"Target(model={self.model!r}, deployment_id={self.deployment_id})"

    @property
    def fingerprint(self) -> str:
        """``system_fingerprint`` of responses: which weights answered."""
        if self.upstream_url:
            return "upstream"
        return f"lora-{self.adapter.key[:12]}" if self.adapter else "base"


@dataclass(frozen=True)
class Step:
    """One target to try for a request, and why (an app's router or fallback chain gives
    several; a plain deployment one)."""

    target: Target
    route: dict[str, Any] = field(default_factory=dict)
    timeout_seconds: float | None = None
    """Time to the first token before a fallback chain tries its next member."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Sampling values (temperature, top_p, max_tokens) for a request that left them unset."""


def _validate(
    name: str,
    *,
    adapter_id: int | None,
    version: int | None,
    alias: str | None,
    base_model_id: int | None,
    upstream_url: str | None,
    upstream_model: str | None,
    app: dict[str, Any] | None = None,
) -> str:
    problems = []
    if not _NAME.match(name):
        problems.append(
            f"name {name!r} must be 1-64 lowercase letters, digits, '.', '_' or '-' "
            "(it is the model id clients send)"
        )
    kinds = [k for k, v in (("adapter", adapter_id), ("base", base_model_id)) if v is not None]
    if upstream_url is not None:
        kinds.append("external")
    if app is not None:
        kinds.append("app")
    if len(kinds) != 1:
        problems.append(
            "give exactly one target: adapter_id (with version or alias), base_model_id, "
            "upstream_url, or app"
        )
    if adapter_id is not None and (version is None) == (alias is None):
        problems.append("an adapter deployment needs either version or alias, not both")
    if adapter_id is None and (version is not None or alias is not None):
        problems.append("version and alias need adapter_id")
    if upstream_url is not None:
        parts = urlsplit(upstream_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"upstream_url {upstream_url!r} must be an http(s) URL such as "
                "http://gpu-host:8000/v1"
            )
        if not upstream_model:
            problems.append("upstream_model is required with upstream_url (the upstream's id)")
    if problems:
        raise InvalidRequest("; ".join(problems), code="invalid_deployment")
    return kinds[0]


def create(
    session: Session,
    owner: User,
    vault: Vault,
    *,
    name: str,
    adapter_id: int | None = None,
    version: int | None = None,
    alias: str | None = None,
    base_model_id: int | None = None,
    upstream_url: str | None = None,
    upstream_model: str | None = None,
    upstream_key: str | None = None,
    system_prompt: str | None = None,
    app: dict[str, Any] | None = None,
    allow_private: bool = False,
) -> Deployment:
    """A new deployment of something you can see (your adapters, public ones, any base), an
    external upstream (refused on a private address unless ``allow_private``), or an app over
    your other deployments (:mod:`loraloop.gateway.apps`)."""
    kind = _validate(
        name,
        adapter_id=adapter_id,
        version=version,
        alias=alias,
        base_model_id=base_model_id,
        upstream_url=upstream_url,
        upstream_model=upstream_model,
        app=app,
    )
    row = Deployment(owner_id=owner.id, name=name, kind=kind, system_prompt=system_prompt)
    if kind == "adapter":
        assert adapter_id is not None
        adapter = adapters.get_visible(session, owner, adapter_id)
        row.adapter_id = adapter.id
        if version is not None:
            row.adapter_version_id = adapters.get_version(session, owner, adapter_id, version).id
        else:
            assert alias is not None
            aliases.resolve(session, adapter.id, alias)  # it must point somewhere already
            row.alias = alias
    elif kind == "base":
        assert base_model_id is not None
        row.base_model_id = base_models.get(session, base_model_id).id
    elif kind == "app":
        from loraloop.gateway import apps  # apps builds on this module

        row.app = apps.validate(session, owner, name, app)
    else:
        egress.check_url(upstream_url or "", allow_private=allow_private)
        row.upstream_url = (upstream_url or "").rstrip("/")
        row.upstream_model = upstream_model
        row.upstream_key = vault.seal(upstream_key) if upstream_key else None
    if by_name(session, owner, name) is not None:
        raise Conflict(f"you already have a deployment named {name}", code="deployment_exists")
    session.add(row)
    session.flush()
    return row


def update_app(
    session: Session, owner: User, deployment_id: int, spec: dict[str, Any]
) -> Deployment:
    """Replace an app's spec; the next request routes by the new one."""
    from loraloop.gateway import apps

    row = get_own(session, owner, deployment_id)
    if row.kind != "app":
        raise InvalidRequest(f"deployment {row.name} is not an app", param="deployment_id")
    row.app = apps.validate(session, owner, row.name, spec)
    session.flush()
    return row


def list_own(session: Session, owner: User) -> list[Deployment]:
    query = select(Deployment).where(Deployment.owner_id == owner.id)
    return list(session.scalars(query.order_by(Deployment.id)))


def get_own(session: Session, owner: User, deployment_id: int) -> Deployment:
    row = session.get(Deployment, deployment_id)
    if row is None or row.owner_id != owner.id:
        raise NotFound(f"deployment {deployment_id} not found", param="deployment_id")
    return row


def by_name(session: Session, owner: User, name: str) -> Deployment | None:
    return session.scalar(
        select(Deployment).where(Deployment.owner_id == owner.id, Deployment.name == name)
    )


# The deployment with every row deployments.resolve reads (adapter, alias, version, base) in
# one query: resolve then finds them in the session instead of sending a query for each.
_SERVING = (
    select(Deployment, Adapter, AdapterAlias, AdapterVersion, BaseModel)
    .outerjoin(Adapter, Adapter.id == Deployment.adapter_id)
    .outerjoin(
        AdapterAlias,
        (AdapterAlias.adapter_id == Deployment.adapter_id)
        & (AdapterAlias.alias == Deployment.alias),
    )
    .outerjoin(
        AdapterVersion,
        AdapterVersion.id == func.coalesce(Deployment.adapter_version_id, AdapterAlias.version_id),
    )
    .outerjoin(
        BaseModel, BaseModel.id == func.coalesce(Deployment.base_model_id, Adapter.base_model_id)
    )
    .where(Deployment.owner_id == bindparam("owner_id"), Deployment.name == bindparam("name"))
)


def serving_steps(
    session: Session,
    settings: Settings,
    vault: Vault,
    owner: User,
    name: str,
    request: Any = None,
) -> list[Step] | None:
    """What to try for a request to ``name`` (None: no such deployment). One query loads
    every row a plain deployment needs; an app plans its members for ``request``
    (an :class:`loraloop.gateway.apps.Request`)."""
    rows = session.execute(_SERVING, {"owner_id": owner.id, "name": name}).first()
    if rows is None:
        return None
    # while ``rows`` is alive the session holds the joined rows, so resolve finds them there
    return steps_of(session, settings, vault, rows[0], request)


def serving_target(
    session: Session, settings: Settings, vault: Vault, owner: User, name: str
) -> Target | None:
    """The first target :func:`serving_steps` would try (None: no such deployment)."""
    found = serving_steps(session, settings, vault, owner, name)
    return found[0].target if found else None


def steps_of(
    session: Session, settings: Settings, vault: Vault, row: Deployment, request: Any
) -> list[Step]:
    if row.kind != "app":
        return [Step(resolve(session, settings, vault, row))]
    from loraloop.gateway import apps

    if row.status != "active":
        resolve(session, settings, vault, row)  # the paused message
    owner = session.get(User, row.owner_id)
    assert owner is not None
    return apps.plan(session, settings, vault, owner, row, request or apps.Request("", {}))


def set_status(session: Session, owner: User, deployment_id: int, status: str) -> Deployment:
    if status not in STATUSES:
        raise InvalidRequest(f"status {status!r} must be one of {', '.join(STATUSES)}")
    row = get_own(session, owner, deployment_id)
    row.status = status
    return row


def delete(session: Session, owner: User, deployment_id: int) -> None:
    session.delete(get_own(session, owner, deployment_id))


def target_label(session: Session, row: Deployment) -> str:
    """What the deployment points at, for people: ``kumo-coffee@champion``, ``base:...``."""
    if row.kind == "external":
        return f"{row.upstream_model} at {row.upstream_url}"
    if row.kind == "app":
        spec = row.app or {}
        members = ", ".join(m["name"] for m in spec.get("members", []))
        return f"app ({spec.get('type')}): {members}"
    if row.kind == "base":
        base = session.get(BaseModel, row.base_model_id)
        return f"base:{base.name if base else '?'}"
    adapter = session.get(Adapter, row.adapter_id)
    name = adapter.name if adapter else "?"
    if row.alias:
        return f"{name}@{row.alias}"
    version = session.get(AdapterVersion, row.adapter_version_id)
    return f"{name}@v{version.version if version else '?'}"


def resolve(session: Session, settings: Settings, vault: Vault, row: Deployment) -> Target:
    """What ``row`` serves at this moment."""
    if row.status != "active":
        raise Conflict(
            f"deployment {row.name} is paused; resume it (POST /api/deployments/{row.id}/resume)",
            code="deployment_paused",
            param="model",
        )
    if row.kind == "app":
        raise InvalidRequest(f"{row.name} is an app; its members answer (see steps_of)")
    if row.kind == "external":
        return Target(
            model=row.name,
            deployment_id=row.id,
            upstream_url=row.upstream_url,
            upstream_model=row.upstream_model,
            upstream_key=vault.open(row.upstream_key) if row.upstream_key else None,
            system_prompt=row.system_prompt,
        )
    if row.kind == "base":
        assert row.base_model_id is not None
        return _local(session, settings, row.name, row.base_model_id, None, row)
    assert row.adapter_id is not None
    if row.alias:
        version = aliases.resolve(session, row.adapter_id, row.alias)
        if row.canary_share > 0 and random.random() < row.canary_share:  # noqa: S311 (a traffic split, not a secret)
            version = aliases.current(session, row.adapter_id, "challenger") or version
    else:
        found = session.get(AdapterVersion, row.adapter_version_id)
        if found is None:
            raise NotFound(f"the version behind deployment {row.name} was deleted")
        version = found
    adapter = session.get(Adapter, row.adapter_id)
    assert adapter is not None
    return _local(session, settings, row.name, adapter.base_model_id, version, row)


def _local(
    session: Session,
    settings: Settings,
    model: str,
    base_model_id: int,
    version: AdapterVersion | None,
    row: Deployment | None = None,
) -> Target:
    base = base_models.get(session, base_model_id)
    return Target(
        model=model,
        deployment_id=row.id if row else None,
        base_path=base_models.absolute_path(settings, base),
        adapter=AdapterRef(key=version.sha256, path=Path(version.path)) if version else None,
        adapter_version_id=version.id if version else None,
        system_prompt=row.system_prompt if row else None,
    )


def playground_steps(
    session: Session,
    settings: Settings,
    vault: Vault,
    user: User,
    *,
    deployment: str | None = None,
    adapter_id: int | None = None,
    version: int | None = None,
    base_model_id: int | None = None,
    request: Any = None,
) -> list[Step]:
    """The playground may talk to a deployment (an app too), any visible adapter version,
    or a base."""
    given = [x for x in (deployment, adapter_id, base_model_id) if x is not None]
    if len(given) != 1:
        raise InvalidRequest("choose one of deployment, adapter_id (+ version) or base_model_id")
    if deployment is not None:
        row = by_name(session, user, deployment)
        if row is None:
            raise NotFound(f"you have no deployment named {deployment}", param="deployment")
        return steps_of(session, settings, vault, row, request)
    return [Step(_playground_target(session, settings, user, adapter_id, version, base_model_id))]


def _playground_target(
    session: Session,
    settings: Settings,
    user: User,
    adapter_id: int | None,
    version: int | None,
    base_model_id: int | None,
) -> Target:
    if adapter_id is not None:
        adapter = adapters.get_visible(session, user, adapter_id)
        chosen = (
            adapters.get_version(session, user, adapter_id, version)
            if version is not None
            else aliases.resolve(session, adapter_id, "champion")
        )
        label = f"{adapter.name}@v{chosen.version}"
        return _local(session, settings, label, adapter.base_model_id, chosen)
    assert base_model_id is not None
    base = base_models.get(session, base_model_id)
    return _local(session, settings, f"base:{base.name}", base.id, None)
