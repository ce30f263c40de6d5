"""Contributions offered to an adapter: who may offer them, what they must look like, and
the refusals that keep the pile clean (exact and near-duplicates, per-user rate limits).

Anyone may contribute to a public adapter; a private one takes contributions only from the
people its owner invited. A new item is ``pending`` until review (or the owner) decides it.
Every item keeps its provenance: how it arrived and where its author says it comes from.
"""

from __future__ import annotations

import functools
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loraloop.catalog import adapters, aliases
from loraloop.config import Settings
from loraloop.contributions import content, review, rules, settle
from loraloop.db.engine import utcnow
from loraloop.db.tables import (
    Adapter,
    CommunityMember,
    Contribution,
    DatasetVersion,
    DriftReport,
    TrainingCandidate,
    User,
)
from loraloop.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, RateLimited
from loraloop.storage import Storage

__all__ = [
    "KINDS",
    "accepted_by_author",
    "adapter_for",
    "add_gold",
    "counts",
    "decide",
    "enrol",
    "from_candidate",
    "get",
    "invite",
    "list_for_adapter",
    "list_mine",
    "membership",
    "place",
    "submit",
    "user_text",
]

KINDS = ("example", "eval_case", "correction")
SUBMITTABLE = content.SUBMITTABLE
user_text = content.user_text


def adapter_for(session: Session, user: User, adapter_id: int) -> Adapter:
    """The adapter if ``user`` may contribute to it; others get "not found"."""
    adapter = session.get(Adapter, adapter_id)
    if adapter is None or not _may_contribute(session, user, adapter):
        raise NotFound(f"adapter {adapter_id} not found", param="adapter_id")
    return adapter


def _may_contribute(session: Session, user: User, adapter: Adapter) -> bool:
    if adapter.owner_id == user.id or adapter.visibility == "public":
        return True
    return _member(session, adapter.id, user.id) is not None


def _member(session: Session, adapter_id: int, user_id: int) -> CommunityMember | None:
    return session.scalar(
        select(CommunityMember).where(
            CommunityMember.adapter_id == adapter_id, CommunityMember.user_id == user_id
        )
    )


def invite(session: Session, owner: User, adapter_id: int, email: str) -> CommunityMember:
    """The owner lets a user contribute to (and review for) a private adapter."""
    adapter = adapters.get_own(session, owner, adapter_id)
    guest = session.scalar(select(User).where(User.email == email.strip().lower()))
    if guest is None or not guest.is_active:
        raise InvalidRequest(
            f"no active account has the email {email}; they sign up first",
            code="no_such_account",
            param="email",
        )
    if guest.id == adapter.owner_id:
        raise InvalidRequest("you own this adapter already", param="email")
    row = _member(session, adapter.id, guest.id)
    if row is None:
        row = CommunityMember(adapter_id=adapter.id, user_id=guest.id, invited_by=owner.id)
        session.add(row)
    row.invited_by = owner.id
    session.flush()
    return row


def membership(session: Session, user: User, adapter_id: int) -> CommunityMember | None:
    """The user's place in the adapter's community (invited, reviewer), if any."""
    adapter = adapter_for(session, user, adapter_id)
    return _member(session, adapter.id, user.id)


def enrol(session: Session, user: User, adapter_id: int, *, reviewer: bool) -> CommunityMember:
    """Join (or leave) the adapter's reviewer pool. Owners decide directly instead."""
    adapter = adapter_for(session, user, adapter_id)
    if adapter.owner_id == user.id:
        raise InvalidRequest(
            "owners accept or reject items on their own adapter directly; they are not drawn "
            "as reviewers",
            param="reviewer",
        )
    row = _member(session, adapter.id, user.id)
    if row is None:
        row = CommunityMember(adapter_id=adapter.id, user_id=user.id)
        session.add(row)
    row.reviewer = reviewer
    session.flush()
    return row


# submitting --------------------------------------------------------------------------------


def _rate_limit(session: Session, settings: Settings, user: User) -> None:
    since = utcnow() - timedelta(hours=1)
    recent = list(
        session.scalars(
            select(Contribution.created_at)
            .where(Contribution.author_id == user.id, Contribution.created_at > since)
            .order_by(Contribution.created_at)
        )
    )
    if len(recent) >= settings.contributions_per_hour:
        oldest = recent[-settings.contributions_per_hour]
        wait = int((oldest + timedelta(hours=1) - utcnow()).total_seconds()) + 1
        raise RateLimited(
            f"you offered {len(recent)} contributions in the last hour; the limit is "
            f"{settings.contributions_per_hour}. Try again in {max(wait, 1)} s",
            retry_after=max(wait, 1),
            code="contribution_rate",
        )


def submit(
    session: Session,
    settings: Settings,
    storage: Storage,
    user: User,
    adapter_id: int,
    *,
    kind: str,
    item: dict[str, Any],
    source: str | None = None,
    via: str = "api",
) -> Contribution:
    """Offer one item; refused with the reason (and the existing item) when it duplicates."""
    adapter = adapter_for(session, user, adapter_id)
    if kind not in KINDS:
        raise InvalidRequest(f"kind {kind!r} must be one of {', '.join(SUBMITTABLE)}", param="kind")
    messages, expected, metric = content.parse(kind, item)
    if source is not None and len(source) > 500:
        raise InvalidRequest("source has at most 500 characters", param="source")
    _rate_limit(session, settings, user)
    digest = content.digest(kind, messages, expected)
    same = session.scalar(
        select(Contribution).where(
            Contribution.adapter_id == adapter.id, Contribution.content_sha256 == digest
        )
    )
    if same is not None:
        raise Conflict(
            f"this {kind} was already offered as contribution #{same.id} ({same.status})",
            code="duplicate",
            param=f"contribution:{same.id}",
        )
    row = Contribution(
        adapter_id=adapter.id,
        author_id=user.id,
        kind=kind,
        messages=messages,
        expected=expected,
        metric=metric,
        provenance={"via": via, **({"source": source.strip()} if source else {})},
        content_sha256=digest,
    )
    _place(session, settings, storage, row, check_training=True)
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:  # the same item offered at the same moment
        raise Conflict(f"this {kind} was just offered by someone else", code="duplicate") from None
    if adapter.owner_id == user.id:
        settle.finalize(
            session, row, accepted=True, via="owner", by=user.id, reason="the owner's own item"
        )
    else:
        review.staff(session, settings, row)
    return row


def add_gold(
    session: Session,
    settings: Settings,
    owner: User,
    adapter_id: int,
    *,
    kind: str,
    item: dict[str, Any],
    verdict: str,
) -> Contribution:
    """The owner adds an item whose right verdict is known. It is drawn to reviewers like any
    other, round after round, and measures how often each one judges right; it never reaches
    training, and reviewers cannot tell it from a real item."""
    adapter = adapters.get_own(session, owner, adapter_id)
    if verdict not in ("accept", "reject"):
        raise InvalidRequest("a gold item's verdict is accept or reject", param="verdict")
    if kind not in SUBMITTABLE:
        raise InvalidRequest(f"kind {kind!r} must be one of {', '.join(SUBMITTABLE)}", param="kind")
    messages, expected, metric = content.parse(kind, item)
    digest = content.digest("gold", kind, messages, expected)
    if session.scalar(
        select(Contribution.id).where(
            Contribution.adapter_id == adapter.id, Contribution.content_sha256 == digest
        )
    ):
        raise Conflict("this gold item exists already", code="duplicate")
    row = Contribution(
        adapter_id=adapter.id,
        author_id=owner.id,
        kind=kind,
        messages=messages,
        expected=expected,
        metric=metric,
        provenance={"via": "gold"},
        content_sha256=digest,
        status="gold",
        gold=verdict,
    )
    session.add(row)
    session.flush()
    review.staff(session, settings, row)
    return row


def from_candidate(session: Session, candidate: TrainingCandidate) -> Contribution:
    """Someone else's correction of an adapter's answer, put to review. The maintenance tick
    embeds it and draws its reviewers (:func:`loraloop.contributions.review.maintain`)."""
    digest = content.digest("correction", candidate.messages, candidate.id)
    row = Contribution(
        adapter_id=candidate.adapter_id,
        author_id=candidate.author_id,
        kind="correction",
        messages=candidate.messages,
        provenance={"via": "feedback", "feedback_id": candidate.feedback_id},
        content_sha256=digest,
        candidate_id=candidate.id,
    )
    session.add(row)
    session.flush()
    return row


def place(session: Session, settings: Settings, storage: Storage, row: Contribution) -> None:
    """Embed a correction that arrived through feedback (it skips duplicate checks: the same
    question may well be corrected twice)."""
    _place(session, settings, storage, row, check_training=False)


def _place(
    session: Session,
    settings: Settings,
    storage: Storage,
    row: Contribution,
    *,
    check_training: bool,
) -> None:
    """Embed the item; refuse near-duplicates; measure novelty and drift coverage."""
    from loraloop.ml import embeddings

    model = embeddings.load_minilm()
    vector = model.embed([user_text(row.messages)])[0]
    threshold = settings.near_duplicate_cosine
    if row.kind != "correction":
        existing = session.execute(
            select(Contribution.id, Contribution.status, Contribution.embedding).where(
                Contribution.adapter_id == row.adapter_id,
                Contribution.embedding.is_not(None),
                Contribution.kind != "correction",
            )
        ).all()
        if existing:
            matrix = np.stack([np.frombuffer(e or b"", dtype=np.float32) for _, _, e in existing])
            sims = matrix @ vector
            best = int(np.argmax(sims))
            if sims[best] >= threshold:
                found_id, status, _ = existing[best]
                raise Conflict(
                    f"this {row.kind} nearly duplicates contribution #{found_id} ({status}; "
                    f"cosine {sims[best]:.3f} ≥ {threshold})",
                    code="near_duplicate",
                    param=f"contribution:{found_id}",
                )
    texts, reference = _training_inputs(session, settings, storage, row.adapter_id)
    novelty = 1.0
    if reference is not None and len(reference):
        sims = reference @ vector
        best = int(np.argmax(sims))
        novelty = float(max(0.0, 1.0 - sims[best]))
        if check_training and sims[best] >= threshold:
            quoted = texts[best] if len(texts[best]) <= 80 else texts[best][:77] + "..."
            raise Conflict(
                f"this {row.kind} nearly duplicates the training set (cosine {sims[best]:.3f} "
                f"≥ {threshold}): {quoted!r}",
                code="near_duplicate",
                param="training_set",
            )
    row.embedding = vector.astype(np.float32).tobytes()
    row.novelty = round(novelty, 4)
    row.drift_cluster = _drift_cluster(session, row.adapter_id, vector)


def _training_inputs(
    session: Session, settings: Settings, storage: Storage, adapter_id: int
) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The champion's training inputs and their MiniLM matrix (the drift check's cache)."""
    champion = aliases.current(session, adapter_id, "champion")
    data = (
        session.get(DatasetVersion, champion.dataset_version_id)
        if champion is not None and champion.dataset_version_id
        else None
    )
    if data is None:
        return (), None
    return _reference(str(storage.path(data.train_sha256)), str(settings.home))


@functools.lru_cache(maxsize=16)
def _reference(train_file: str, home: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Read and embedded once per process: a training file is content-addressed, so it never
    changes under its name."""
    from loraloop.mlops.drift_job import reference_cache, reference_matrix, training_inputs

    path = Path(train_file)
    matrix = reference_matrix(path, reference_cache(Path(home), path))
    return tuple(training_inputs(path)), matrix


def _drift_cluster(session: Session, adapter_id: int, vector: np.ndarray) -> str | None:
    """The label of the latest drift alarm's cluster the item covers, if any (last 30 days)."""
    report = session.scalar(
        select(DriftReport)
        .where(
            DriftReport.adapter_id == adapter_id,
            DriftReport.alarm == "drift",
            DriftReport.created_at > utcnow() - timedelta(days=30),
        )
        .order_by(DriftReport.id.desc())
        .limit(1)
    )
    if report is None:
        return None
    best: tuple[float, str | None] = (rules.DRIFT_COVER_COSINE, None)
    for label, examples in _cluster_examples(report.id, _examples_of(report.input)):
        similarity = float(np.max(examples @ vector))
        if similarity >= best[0]:
            best = (similarity, label)
    return best[1]


def _examples_of(report_input: dict[str, Any] | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    out = []
    for cluster in (report_input or {}).get("clusters") or []:
        examples = tuple(e for e in cluster.get("examples") or [] if isinstance(e, str))
        if examples:
            out.append((str(cluster.get("label") or examples[0])[:200], examples))
    return tuple(out)


@functools.lru_cache(maxsize=32)
def _cluster_examples(
    report_id: int, clusters: tuple[tuple[str, tuple[str, ...]], ...]
) -> list[tuple[str, np.ndarray]]:
    """Each cluster's label and example embeddings, embedded once per drift report (a report
    never changes), not once per contribution."""
    from loraloop.ml import embeddings

    model = embeddings.load_minilm()
    return [(label, model.embed(list(examples))) for label, examples in clusters]


# deciding and reading ----------------------------------------------------------------------


def decide(
    session: Session,
    user: User,
    contribution_id: int,
    *,
    accept: bool,
    reason: str | None = None,
) -> Contribution:
    """The adapter's owner accepts or rejects a pending item directly."""
    row = session.get(Contribution, contribution_id)
    if row is None:
        raise NotFound(f"contribution {contribution_id} not found", param="contribution_id")
    adapter = adapter_for(session, user, row.adapter_id)
    if adapter.owner_id != user.id:
        raise PermissionDenied("only the adapter's owner decides directly; review it instead")
    if row.status != "pending":
        raise Conflict(
            f"contribution {contribution_id} is {row.status}", code="contribution_decided"
        )
    if not accept and not (reason or "").strip():
        raise InvalidRequest("say why the contribution is rejected", param="reason")
    settle.finalize(session, row, accepted=accept, via="owner", by=user.id, reason=reason)
    return row


def get(session: Session, user: User, contribution_id: int) -> Contribution:
    """An item its author or the adapter's owner may read in full (gold items: owner only)."""
    row = session.get(Contribution, contribution_id)
    if row is not None:
        adapter = session.get(Adapter, row.adapter_id)
        if adapter is not None and (
            adapter.owner_id == user.id or (row.author_id == user.id and row.gold is None)
        ):
            return row
    raise NotFound(f"contribution {contribution_id} not found", param="contribution_id")


def list_mine(session: Session, user: User, limit: int = 200) -> list[Contribution]:
    query = select(Contribution).where(
        Contribution.author_id == user.id, Contribution.gold.is_(None)
    )
    return list(session.scalars(query.order_by(Contribution.id.desc()).limit(limit)))


def list_for_adapter(
    session: Session, user: User, adapter_id: int, status: str | None = None, limit: int = 200
) -> list[Contribution]:
    """The owner's view of every item offered to their adapter."""
    adapters.get_own(session, user, adapter_id)
    query = select(Contribution).where(Contribution.adapter_id == adapter_id)
    if status is not None:
        query = query.where(Contribution.status == status)
    return list(session.scalars(query.order_by(Contribution.id.desc()).limit(limit)))


def counts(session: Session, adapter_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Contribution.status, func.count())
        .where(Contribution.adapter_id == adapter_id)
        .group_by(Contribution.status)
    )
    return {status: int(n) for status, n in rows}


def accepted_by_author(session: Session, adapter_id: int) -> dict[int, int]:
    rows = session.execute(
        select(Contribution.author_id, func.count())
        .where(Contribution.adapter_id == adapter_id, Contribution.status == "accepted")
        .group_by(Contribution.author_id)
    )
    return {int(a): int(n) for a, n in rows if a is not None}
