"""The work a provider node does, from claim to credit.

An untrusted node gets only jobs whose owner allowed community compute (``remote_ok``): a
training run that keeps a held-out split back for checking (``validation_file``), never that
split itself; or an evaluation without a judge (:mod:`eval_work`). It downloads its inputs by
hash, uploads its artifact in resumable chunks (an evaluation reports its answers instead), and
completes. Then the server holds the job (``hand_over``: still running, the lease now the
server's) and queues ``verify_train`` or ``verify_evaluate`` on a trusted worker (an
evaluation's scores are first rescored at once). Only a passed verification completes the job
(the version or the evaluation is recorded as any other) and credits the node's owner for the
work measured; a failed one costs the node reliability and puts the job back in the queue for
another node.

A trusted node (an admin's ``worker`` key) is taken at its word, as the local worker is.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loraloop.config import Settings
from loraloop.db.engine import utcnow
from loraloop.db.tables import Job, ProviderNode, ProviderWork, User
from loraloop.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from loraloop.jobs import queue
from loraloop.jobs.states import ACTIVE
from loraloop.providers import eval_work, nodes
from loraloop.rewards import ledger
from loraloop.storage import sha256_file

__all__ = [
    "REMOTE_KINDS",
    "UPLOADS",
    "claim",
    "complete",
    "confirmed",
    "input_file",
    "inputs",
    "job_kinds",
    "on_probation",
    "reap",
    "upload",
    "verified",
]

REMOTE_KINDS = ("train", "train_check", "evaluate")
PROBATION_JOBS = 2
"""Verified training jobs a provider node does before its results count without a second run."""
AGREE_TOLERANCE = 0.05
"""Largest relative distance between two runs of the same training for them to agree."""
UPLOADS = ("adapter_model.safetensors", "adapter_config.json", "README.md")
"""The PEFT folder a node uploads (safetensors only), plus its audit trail: every checkpoint
(``checkpoints/step-NNNNNN/...``), of which the verifier replays one segment."""
_CHECKPOINT_FILE = re.compile(
    r"^checkpoints/step-\d{6}/"
    r"(adapter\.safetensors|optimizer\.safetensors|optimizer\.json|scheduler\.json|state\.json)$"
)
REPLAY_TOLERANCE = 0.01
"""Largest relative distance between replayed and uploaded weights a segment may show."""
MAX_UPLOAD = 4 * 1024**3
CHUNK = 8 * 1024 * 1024
MIN_GAIN = 0.01
"""Relative loss reduction on held-out data a real training run must show."""
HOLD_SECONDS = 6 * 3600
"""How long the server holds a job while its verification runs."""
TOKEN_PARAMS_PER_POINT = 10**12
"""One point per 10^12 (tokens trained × parameters), about 6 × 10^12 training FLOPs."""
_BASE_SUFFIXES = (".json", ".safetensors", ".txt", ".model", ".jinja")


def _owner_of_job(node: ProviderNode) -> str:
    return f"node:{node.id}"


def reap(session: Session) -> None:
    """Take back expired leases; a provider whose lease ran out lost that work."""
    requeued, failed = queue.reap(session)
    _lost(session, requeued + failed)


def _lost(session: Session, job_ids: list[int]) -> None:
    """Work still marked running on a job whose lease it no longer holds (whoever took the
    lease back: this module, the local worker, another replica) was lost by its node."""
    if not job_ids:
        return
    for work in session.scalars(
        select(ProviderWork).where(
            ProviderWork.job_id.in_(job_ids), ProviderWork.status == "running"
        )
    ):
        job = session.get(Job, work.job_id)
        holds = (
            job is not None
            and job.status in ACTIVE
            and job.node_id == work.node_id
            and job.attempts == work.attempt
        )
        if holds:
            continue
        work.status, work.finished_at = "lost", utcnow()
        node = session.get(ProviderNode, work.node_id)
        if node is not None:
            node.lost += 1


def _eligible(node: ProviderNode, job: Job) -> bool:
    payload = job.payload
    if node.id in (payload.get("exclude_nodes") or []):
        return False
    if node.owner_id in (payload.get("exclude_owners") or []):
        return False
    if not node.trusted and not _open_to_providers(job):
        return False
    if not nodes.fits(node, payload):
        return False
    return (utcnow() - job.created_at).total_seconds() >= nodes.patience(node)


def _open_to_providers(job: Job) -> bool:
    """Whether an untrusted node may run the job at all (whoever it is)."""
    payload = job.payload
    if job.kind not in REMOTE_KINDS or not payload.get("remote_ok"):
        return False
    if job.kind == "evaluate":
        return eval_work.open_to_providers(payload)
    return bool(payload.get("validation_file"))


def claim(
    session: Session, settings: Settings, node: ProviderNode, kinds: list[str] | None = None
) -> Job | None:
    """Lease the next job this node may and can run, or None."""
    reap(session)
    query = select(Job).where(Job.status == "queued")
    allowed = list(kinds) if kinds else None
    if not node.trusted:
        allowed = [k for k in (allowed or REMOTE_KINDS) if k in REMOTE_KINDS]
    if allowed is not None:
        query = query.where(Job.kind.in_(allowed))
    for job in session.scalars(query.order_by(Job.priority.desc(), Job.id).limit(50)):
        if not _eligible(node, job):
            continue
        leased = queue.claim(
            session,
            _owner_of_job(node),
            lease_seconds=settings.job_lease_seconds,
            job_id=job.id,
        )
        if leased is None:
            continue  # another node took it first
        _lost(session, [leased.id])  # an earlier attempt's node, if any, lost it
        leased.node_id = node.id
        session.add(ProviderWork(node_id=node.id, job_id=leased.id, attempt=leased.attempts))
        session.flush()
        return leased
    return None


def holding(session: Session, node: ProviderNode, job_id: int, token: str) -> Job:
    """The job, if this node holds its current lease; 409 for anyone else's."""
    job = session.get(Job, job_id)
    if job is None:
        raise NotFound(f"job {job_id} not found", param="job_id")
    if job.node_id != node.id or job.lease_token != token or job.status not in ACTIVE:
        raise Conflict(
            f"job {job_id} is not leased to node {node.id} with this token", code="not_your_job"
        )
    return job


# inputs ------------------------------------------------------------------------------------


def _base_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _BASE_SUFFIXES)


def inputs(node: ProviderNode, job: Job) -> dict[str, Any]:
    """The payload a node runs: the spec, and every input by name, size and sha256; no
    server paths, and never the held-out split (a trusted node gets the payload as is)."""
    payload = job.payload
    if node.trusted:
        return payload
    files: dict[str, dict[str, Any]] = {}
    base: dict[str, Any] = {
        "name": payload.get("base_name"),
        "default": bool(payload.get("base_default")),
    }
    if not base["default"]:
        for path in _base_files(Path(payload["base_path"])):
            files[f"base/{path.name}"] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    if job.kind == "evaluate":
        return eval_work.inputs(payload, files, base)
    train = Path(payload["train_file"])
    files["train_file"] = {"sha256": train.name, "size": train.stat().st_size}
    keep = ("adapter_name", "base_name", "licence", "dataset", "adapter_id")
    return {
        **{k: payload[k] for k in keep if k in payload},
        "spec": {**payload["spec"], "keep_checkpoints": True},
        "base": base,
        "files": files,
        "uploads": list(UPLOADS),
    }


def input_file(session: Session, node: ProviderNode, job_id: int, token: str, name: str) -> Path:
    job = holding(session, node, job_id, token)
    payload = job.payload
    if not (node.trusted or payload.get("remote_ok")):
        raise NotFound(f"job {job_id} has no input named {name}", param="name")
    if name == "train_file" and job.kind != "evaluate":
        return Path(payload["train_file"])
    if job.kind == "evaluate" and (path := eval_work.version_file(payload, name)) is not None:
        return path
    if name.startswith("base/") and not payload.get("base_default"):
        wanted = name.removeprefix("base/")
        for path in _base_files(Path(payload["base_path"])):
            if path.name == wanted:
                return path
    raise NotFound(f"job {job_id} has no input named {name}", param="name")


# uploads -----------------------------------------------------------------------------------


def _upload_dir(settings: Settings, job: Job) -> Path:
    return settings.home / "uploads" / f"job-{job.id}-attempt-{job.attempts}"


def upload(
    session: Session,
    settings: Settings,
    node: ProviderNode,
    job_id: int,
    token: str,
    name: str,
    offset: int,
    chunk: bytes | None,
) -> int:
    """Append ``chunk`` at ``offset`` (which must be the size already received: 409 names it,
    so an interrupted upload resumes); without a chunk, report that size."""
    job = holding(session, node, job_id, token)
    _check_name(name)
    folder = _upload_dir(settings, job)
    part = folder / f"{name}.part"
    part.parent.mkdir(parents=True, exist_ok=True)
    size = part.stat().st_size if part.exists() else 0
    if chunk is None:
        return size
    if offset != size:
        raise Conflict(
            f"{name}: {size} bytes are here, so the next chunk starts at {size}, not {offset}",
            code="upload_offset",
        )
    if len(chunk) > CHUNK:
        raise PayloadTooLarge(f"a chunk has at most {CHUNK} bytes")
    if size + len(chunk) > MAX_UPLOAD:
        raise PayloadTooLarge(f"{name} may have at most {MAX_UPLOAD} bytes")
    with part.open("ab") as handle:
        handle.write(chunk)
    return size + len(chunk)


def _check_name(name: str) -> None:
    if name not in UPLOADS and not _CHECKPOINT_FILE.match(name):
        raise InvalidRequest(
            f"upload one of {', '.join(UPLOADS)} or a checkpoint file "
            "(checkpoints/step-NNNNNN/adapter.safetensors, ...)",
            param="name",
        )


def complete(
    session: Session,
    settings: Settings,
    node: ProviderNode,
    job_id: int,
    token: str,
    result: dict[str, Any],
) -> Job:
    """A node's result. A trusted node's is recorded at once; anyone else's uploads are
    checked against the hashes it declares and the job waits for ``verify_train``."""
    job = holding(session, node, job_id, token)
    if node.trusted:
        done = queue.complete(session, job_id, token, result)
        trusted_work = _work(session, job)
        trusted_work.status, trusted_work.finished_at = "accepted", utcnow()
        trusted_work.verification = {"passed": True, "reason": "a trusted node's work"}
        return done
    if job.kind == "evaluate":
        return _complete_evaluation(session, node, job, token, result)
    declared = result.get("files")
    if not isinstance(declared, dict) or "adapter_model.safetensors" not in declared:
        raise InvalidRequest(
            "name the uploaded files and their sha256 in result.files (adapter_model.safetensors "
            "at least)",
            param="result",
        )
    folder = _upload_dir(settings, job)
    problems = []
    for name, digest in declared.items():
        part = folder / f"{name}.part"
        if not (name in UPLOADS or _CHECKPOINT_FILE.match(name)) or not part.exists():
            problems.append(f"{name} was not uploaded")
        elif sha256_file(part) != digest:
            problems.append(f"{name}: the upload's sha256 is not {digest}; upload it again")
    if problems:
        raise InvalidRequest("; ".join(problems), code="upload_mismatch")
    attempt_dir = Path(job.payload["output_dir"]) / f"provider-attempt-{job.attempts}"
    adapter_dir = attempt_dir / "adapter"
    for name in declared:
        target = attempt_dir / name if name.startswith("checkpoints/") else adapter_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder / f"{name}.part", target)
    shutil.rmtree(folder, ignore_errors=True)
    # The segment to replay, drawn only now that every checkpoint is in: from the start or
    # a checkpoint, to the next checkpoint or the end.
    steps = sorted(
        {
            int(n.split("/")[1].removeprefix("step-"))
            for n in declared
            if n.startswith("checkpoints/")
        }
    )
    start = secrets.choice([0, *steps])
    later = [s for s in steps if s > start]
    claimed = {
        "adapter_dir": str(adapter_dir),
        "sha256": declared["adapter_model.safetensors"],
        "metrics": result.get("metrics") or {},
        "node_id": node.id,
    }
    hold = secrets.token_hex(16)
    queue.hand_over(
        session, job_id, token, to_token=hold, hold_seconds=HOLD_SECONDS, result=claimed
    )
    work = _work(session, job)
    payload = job.payload
    verify = queue.enqueue(
        session,
        _owner(session, job),
        "verify_train",
        {
            "job_id": job.id,
            "hold_token": hold,
            "work_id": work.id,
            "base_path": payload["base_path"],
            "base_default": payload.get("base_default", False),
            "models_dir": payload.get("models_dir"),
            "adapter_dir": str(adapter_dir),
            "validation_file": payload["validation_file"],
            "train_file": payload["train_file"],
            "spec": {**payload["spec"], "keep_checkpoints": True},
            "min_gain": MIN_GAIN,
            "replay": {
                "from": start,
                "to": later[0] if later else None,
                "checkpoints": str(attempt_dir / "checkpoints"),
                "tolerance": REPLAY_TOLERANCE,
            },
        },
        submitted=False,
        max_attempts=2,
    )
    work.status, work.uploads, work.claimed, work.verify_job_id = (
        "verifying",
        dict(declared),
        claimed,
        verify.id,
    )
    session.flush()
    return job


def _complete_evaluation(
    session: Session, node: ProviderNode, job: Job, token: str, result: dict[str, Any]
) -> Job:
    """Rescore every answer now (any disagreement rejects the work); otherwise hold the job,
    with the server's scores as its result, while ``verify_evaluate`` spot-checks it."""
    work = _work(session, job)
    checked = eval_work.rescore(job.payload, result)
    work.claimed = {"versions": checked.claimed, "node_id": node.id}
    rescored = {"passed": not checked.problems, "cases": checked.cases}
    if checked.problems:
        reason = (
            f"the server rescored the {checked.cases} answers and {len(checked.problems)} "
            "reported number(s) disagree: " + "; ".join(checked.problems[:5])
        )
        work.verification = {
            "passed": False,
            "reason": reason,
            "work": "evaluation",
            "rescore": {**rescored, "disagreements": len(checked.problems)},
        }
        work.finished_at = utcnow()
        _reject(session, work, job, token, reason)
        return job
    sample = eval_work.draw(job.payload, checked.result)
    hold = secrets.token_hex(16)
    queue.hand_over(
        session,
        job.id,
        token,
        to_token=hold,
        hold_seconds=HOLD_SECONDS,
        result={**checked.result, "node_id": node.id},
    )
    verify = queue.enqueue(
        session,
        _owner(session, job),
        "verify_evaluate",
        eval_work.verify_payload(
            job.payload, checked.result, sample, job_id=job.id, hold_token=hold, work_id=work.id
        ),
        submitted=False,
        max_attempts=2,
    )
    work.status, work.verify_job_id = "verifying", verify.id
    work.verification = {"work": "evaluation", "rescore": rescored}
    session.flush()
    return job


def _owner(session: Session, job: Job) -> User:
    owner = session.get(User, job.owner_id)
    assert owner is not None
    return owner


def _work(session: Session, job: Job) -> ProviderWork:
    work = session.scalar(
        select(ProviderWork).where(
            ProviderWork.job_id == job.id, ProviderWork.attempt == job.attempts
        )
    )
    assert work is not None
    return work


def on_probation(session: Session, node: ProviderNode) -> bool:
    """A provider node's first ``PROBATION_JOBS`` verified training jobs are each confirmed by
    a second run elsewhere (another owner's node, or a trusted worker). Only training counts:
    passing cheap evaluations must not buy a node out of the redundancy check of training."""
    if node.trusted:
        return False
    trained = session.scalar(
        select(func.count())
        .select_from(ProviderWork)
        .join(Job, Job.id == ProviderWork.job_id)
        .where(
            ProviderWork.node_id == node.id,
            ProviderWork.status == "accepted",
            Job.kind.in_(("train", "train_check")),
        )
    )
    return int(trained or 0) < PROBATION_JOBS


def verified(session: Session, verify: Job) -> None:
    """Success hook of ``verify_train`` and ``verify_evaluate``: complete the held job and
    credit the node (for training, after a confirming run elsewhere while the node is on
    probation), or put the job back in the queue without that node."""
    payload, outcome = verify.payload, verify.result or {}
    work = session.get(ProviderWork, payload["work_id"])
    job = session.get(Job, payload["job_id"])
    if work is None or job is None or work.status != "verifying":
        return
    node = session.get(ProviderNode, work.node_id)
    work.verification, work.finished_at = {**(work.verification or {}), **outcome}, utcnow()
    if not outcome.get("passed"):
        _reject(session, work, job, payload["hold_token"], str(outcome.get("reason")))
        return
    if node is not None and job.kind == "train" and on_probation(session, node):
        work.status = "confirming"
        _confirm(session, work, job, node, payload["hold_token"])
        return
    _accept(session, work, job, payload["hold_token"], outcome)


def _accept(
    session: Session, work: ProviderWork, job: Job, hold: str, outcome: dict[str, Any]
) -> None:
    work.status = "accepted"
    node = session.get(ProviderNode, work.node_id)
    if node is not None:
        node.verified_ok += 1
    assert job.result is not None
    queue.complete(session, job.id, hold, job.result)
    if node is not None:
        _credit(session, node, work, outcome, job.kind)


def _reject(session: Session, work: ProviderWork, job: Job, hold: str, reason: str) -> None:
    work.status = "rejected"
    node = session.get(ProviderNode, work.node_id)
    if node is not None:
        node.verified_bad += 1
    job.payload = {
        **job.payload,
        "exclude_nodes": sorted({*(job.payload.get("exclude_nodes") or []), work.node_id}),
    }
    queue.fail(
        session,
        job.id,
        hold,
        f"node {work.node_id}'s result failed verification: {reason}; queued again for "
        "another node",
        retryable=True,
    )


def _confirm(session: Session, work: ProviderWork, job: Job, node: ProviderNode, hold: str) -> Job:
    """Queue the same training again (``train_check``), for anyone but this node's owner."""
    job.lease_expires_at = utcnow() + timedelta(seconds=HOLD_SECONDS)
    check = queue.enqueue(
        session,
        _owner(session, job),
        "train_check",
        {
            **job.payload,
            "output_dir": str(Path(job.payload["output_dir"]) / f"check-of-work-{work.id}"),
            "exclude_owners": [node.owner_id],
            "exclude_nodes": [],
            "check_of": {"job_id": job.id, "work_id": work.id, "hold_token": hold},
        },
        submitted=False,
        max_attempts=3,
    )
    work.verification = {**(work.verification or {}), "confirmation_job": check.id}
    session.flush()
    return check


def confirmed(session: Session, check: Job) -> None:
    """Success hook of ``train_check``: the two runs must agree (their weights within
    ``AGREE_TOLERANCE`` of each other) before the probationary node's result counts."""
    info = check.payload["check_of"]
    work = session.get(ProviderWork, info["work_id"])
    job = session.get(Job, info["job_id"])
    if work is None or job is None or work.status != "confirming" or job.result is None:
        return
    distance = _distance(
        Path(job.result["adapter_dir"]) / "adapter_model.safetensors",
        Path((check.result or {})["adapter_dir"]) / "adapter_model.safetensors",
    )
    agreed = distance is not None and distance <= AGREE_TOLERANCE
    work.verification = {
        **(work.verification or {}),
        "confirmation": {
            "job_id": check.id,
            "distance": None if distance is None else round(distance, 8),
            "tolerance": AGREE_TOLERANCE,
            "agreed": agreed,
        },
    }
    if agreed:
        _accept(session, work, job, info["hold_token"], work.verification)
    else:
        _reject(
            session,
            work,
            job,
            info["hold_token"],
            f"a second run elsewhere lands {distance if distance is not None else '?'} away "
            f"(relative; at most {AGREE_TOLERANCE} allowed)",
        )


def _distance(first: Path, second: Path) -> float | None:
    """Relative L2 distance between two adapters' weights (None: not comparable)."""
    import numpy as np
    from safetensors.numpy import load_file

    try:
        a, b = load_file(str(first)), load_file(str(second))
    except (OSError, ValueError):
        return None
    if set(a) != set(b):
        return None
    gap = sum(float(np.sum((a[k].astype(np.float64) - b[k]) ** 2)) for k in a)
    size = sum(float(np.sum(a[k].astype(np.float64) ** 2)) for k in a)
    return math.sqrt(gap / size) if size else None


def _credit(
    session: Session, node: ProviderNode, work: ProviderWork, outcome: dict[str, Any], kind: str
) -> None:
    """One point per 10^12 (tokens × parameters), as the verifier measured them: tokens
    trained for training, tokens evaluated (prompts and answers) for an evaluation."""
    evaluating = kind == "evaluate"
    tokens, params = int(outcome.get("tokens") or 0), int(outcome.get("params") or 0)
    points = tokens * params / TOKEN_PARAMS_PER_POINT
    ledger.append(
        session,
        user_id=node.owner_id,
        adapter_id=None,
        millipoints=max(1, math.floor(points * 1000 + 0.5)),
        kind="compute",
        source_type="provider_work",
        source_id=work.id,
        key=f"compute:work:{work.id}",
        breakdown={
            "formula": "tokens × parameters / 10^12",
            "tokens": tokens,
            "parameters": params,
            "work": "evaluation" if evaluating else "training",
            "measured_by": "verify_evaluate" if evaluating else "verify_train",
            "job_id": work.job_id,
            "node_id": node.id,
            "points": round(points, 6),
        },
    )


def job_kinds(session: Session, rows: list[ProviderWork]) -> dict[int, str]:
    """The kind of each work row's job (job id → kind), so a page can tell training from
    evaluation work."""
    ids = sorted({w.job_id for w in rows})
    if not ids:
        return {}
    found = session.execute(select(Job.id, Job.kind).where(Job.id.in_(ids)))
    return {job_id: kind for job_id, kind in found}


def recent(session: Session, node_ids: list[int], limit: int = 100) -> list[ProviderWork]:
    if not node_ids:
        return []
    query = select(ProviderWork).where(ProviderWork.node_id.in_(node_ids))
    return list(session.scalars(query.order_by(ProviderWork.id.desc()).limit(limit)))
