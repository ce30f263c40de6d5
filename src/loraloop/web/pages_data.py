"""Pages of the data area: datasets (list, upload, one dataset with its preview), a new
training run (with the time estimate as JSON for the form's script) and one job's progress.

Uploading, training and cancelling go through the REST API from the pages' scripts; these
routes only read (one service call each) and render. Another user's dataset or job answers
404, exactly like a missing one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from markupsafe import Markup
from starlette.responses import JSONResponse, RedirectResponse, Response

from loraloop.api.deps import AppDatabase, AppSettings, AppStorage
from loraloop.catalog import adapters, base_models, estimates
from loraloop.datasets import service as datasets
from loraloop.datasets.cleaning import MIN_FOR_VALIDATION
from loraloop.datasets.formats import FORMATS
from loraloop.db.tables import Job
from loraloop.errors import NotFound, Unauthenticated
from loraloop.jobs import queue
from loraloop.jobs.states import OPERATIONS, TERMINAL
from loraloop.web.templates import render
from loraloop.web.viewer import PageViewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

Id = Annotated[int, Query(ge=1, le=2**31)]
PathId = Annotated[int, Path(ge=1, le=2**62)]
Preset = Literal["quick", "balanced", "thorough"]
Targets = Literal["attention", "all-linear"]

#: Statuses in which the job page offers Cancel, and Resume/Retry.
CANCELLABLE = tuple(status.value for status in OPERATIONS["cancel"][0])
RETRYABLE = tuple(status.value for status in OPERATIONS["retry"][0])
FINISHED = tuple(status.value for status in TERMINAL)


def _see_other(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


def _blob(value: Any) -> Markup:
    """``value`` as JSON to put inside ``<script type="application/json">`` (``<`` escaped)."""
    text = json.dumps(value, ensure_ascii=False, default=str).replace("<", "\\u003c")
    return Markup(text)  # noqa: S704 - JSON with "<" escaped cannot close the script element


def _base_choices(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": row.id,
            "name": row.name,
            "parameters": row.parameters,
            "is_default": row.is_default,
        }
        for row in rows
    ]


# datasets -------------------------------------------------------------------------------


@router.get("/datasets", name="datasets_page")
def datasets_page(
    request: Request, viewer: PageViewer, db: AppDatabase, settings: AppSettings
) -> Response:
    """Your datasets, and the upload form (the upload itself goes to ``POST /api/datasets``)."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        summaries = datasets.list_own(session, viewer.user)
    context = {
        "active": "datasets",
        "summaries": summaries,
        "formats": FORMATS,
        "max_upload_mib": max(1, settings.max_upload_bytes // (1024 * 1024)),
    }
    return render(request, viewer, "datasets.html", context)


@router.get("/datasets/{dataset_id}", name="dataset_page")
def dataset_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    dataset_id: PathId,
    version: Annotated[int | None, Query(ge=1, le=2**31)] = None,
) -> Response:
    """One of your datasets: its versions, the chosen version's report and statistics, and
    a preview of its examples as training sees them (both loaded by the page's script)."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        dataset, versions = datasets.detail(session, viewer.user, dataset_id)
        bases = base_models.list_all(session)
    if not versions:
        raise NotFound(f"dataset {dataset_id} has no versions yet", param="dataset_id")
    by_number = {row.version: row for row in versions}
    chosen = by_number.get(version) if version is not None else versions[-1]
    if chosen is None:
        raise NotFound(f"dataset {dataset_id} has no version {version}", param="version")
    context = {
        "active": "datasets",
        "dataset": dataset,
        "versions": list(reversed(versions)),
        "chosen": chosen,
        "report": chosen.report or {},
        "bases": bases,
        "min_for_validation": MIN_FOR_VALIDATION,
        "page_data": _blob(
            {
                "dataset_id": dataset.id,
                "version": chosen.version,
                "train_examples": chosen.train_examples,
                "validation_examples": chosen.validation_examples,
                "max_length": estimates.DEFAULT_MAX_LENGTH,
            }
        ),
    }
    return render(request, viewer, "dataset.html", context)


# training -------------------------------------------------------------------------------


def _own_adapters(adapter_rows: list[Any]) -> list[dict[str, Any]]:
    return [{"id": a.id, "name": a.name, "base_model_id": a.base_model_id} for a in adapter_rows]


@router.get("/train", name="train_page")
def train_page(
    request: Request,
    viewer: PageViewer,
    db: AppDatabase,
    dataset_id: Id | None = None,
    version: Id | None = None,
    adapter_id: Id | None = None,
) -> Response:
    """The form that starts a training run; ``?dataset_id=&version=&adapter_id=`` preselect."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        summaries = datasets.list_own(session, viewer.user)
        bases = base_models.list_all(session)
        adapter_rows = adapters.list_own(session, viewer.user)
    own = _own_adapters(adapter_rows)
    data = [
        {"id": d.id, "name": d.name, "latest": v.version, "examples": v.examples}
        for d, v in summaries
        if v is not None
    ]
    presets = {name: estimates.preset_settings(name) for name in adapters.PRESETS}
    context = {
        "active": "train",
        "datasets": data,
        "bases": bases,
        "own_adapters": own,
        "presets": presets,
        "selected": {"dataset_id": dataset_id, "version": version, "adapter_id": adapter_id},
        "page_data": _blob(
            {
                "datasets": data,
                "bases": _base_choices(bases),
                "adapters": own,
                "presets": presets,
                "selected": {
                    "dataset_id": dataset_id,
                    "version": version,
                    "adapter_id": adapter_id,
                },
            }
        ),
    }
    return render(request, viewer, "train.html", context)


@router.get("/train/estimate", name="train_estimate")
def train_estimate(
    viewer: PageViewer,
    db: AppDatabase,
    settings: AppSettings,
    storage: AppStorage,
    base_model_id: Id,
    dataset_id: Id,
    version: Id,
    preset: Preset = "balanced",
    epochs: Annotated[float | None, Query(gt=0, le=100)] = None,
    max_length: Annotated[int | None, Query(ge=16, le=32768)] = None,
    targets: Targets | None = None,
) -> Response:
    """JSON for the training form: seconds (with ``low``/``high``) the run should take here,
    the tokens per epoch, the throughput used and how many measured runs it rests on."""
    if viewer.user is None:
        raise Unauthenticated("sign in to estimate a training run")
    with db.session() as session:
        found = estimates.for_training(
            session,
            settings,
            storage,
            viewer.user,
            base_model_id=base_model_id,
            dataset_id=dataset_id,
            dataset_version=version,
            preset=preset,
            epochs=epochs,
            max_length=max_length,
            targets=targets,
        )
    return JSONResponse(asdict(found), headers={"Cache-Control": "no-store"})


# jobs -----------------------------------------------------------------------------------


def _job_view(job: Job) -> dict[str, Any]:
    """What the job page shows and its script needs; never the payload's server paths."""
    payload = job.payload or {}
    dataset = payload.get("dataset") or {}
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "adapter_id": payload.get("adapter_id") if job.kind == "train" else None,
        "adapter_name": payload.get("adapter_name") if job.kind == "train" else None,
        "base_name": payload.get("base_name") if job.kind == "train" else None,
        "dataset": {
            "id": dataset.get("id"),
            "name": dataset.get("name"),
            "version": dataset.get("version"),
        }
        if dataset
        else None,
        "spec": payload.get("spec") if job.kind == "train" else None,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "cancellable": CANCELLABLE,
        "retryable": RETRYABLE,
        "finished": FINISHED,
    }


@router.get("/jobs/{job_id}", name="job_page")
def job_page(request: Request, viewer: PageViewer, db: AppDatabase, job_id: PathId) -> Response:
    """One of your jobs: status, progress, the loss chart and its event log, live while it
    runs (``/api/jobs/{id}/stream``), from its stored events once finished."""
    if viewer.user is None:
        return _see_other("/signin")
    with db.session() as session:
        job = queue.get_own(session, viewer.user, job_id)
    view = _job_view(job)
    context = {"active": "train", "job": job, "view": view, "page_data": _blob(view)}
    return render(request, viewer, "job.html", context)
