"""Transfers with the Hugging Face Hub: fetch an adapter at a pinned revision, push a folder.

    repo@revision ──snapshot_download (3 files, cache)──▶ plain copies in dest/ ──▶ imports
    folder/ ──HfApi.create_repo + upload_folder──▶ repo (a commit) ◀── the user's token, once

A token is used for the one call it came with: it is passed to ``huggingface_hub`` as an
argument, never stored, logged or put in a message. Without one, ``token=False`` makes sure
the server's own login (``HF_TOKEN``) is never lent to a user. Hub errors become loraloop
errors that say what to fix, at the field to fix.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraloop import __version__
from loraloop.errors import InvalidRequest, LoraloopError, UpstreamFailed

__all__ = [
    "ADAPTER_FILES",
    "Pushed",
    "download_adapter",
    "push_folder",
    "repo_problems",
]

#: What an import fetches from a repo; anything else there (pickles included) stays there.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")

log = logging.getLogger(__name__)

# The hub's rules: letters, digits, '-', '_', '.'; no '--' or '..'; no '-' or '.' at the ends.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO = re.compile(rf"^{_NAME}/{_NAME}$")
_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


@dataclass(frozen=True)
class Pushed:
    """Where a push landed."""

    repo_id: str
    url: str
    commit_url: str
    commit: str


def repo_problems(repo_id: str, *, param: str, revision: str | None = None) -> list[str]:
    """What is wrong with a repo id (and a revision, when one is asked for), as messages."""
    problems = []
    if not _REPO.match(repo_id) or "--" in repo_id or ".." in repo_id:
        problems.append(
            f"{param}: {repo_id[:120]!r} is not a hub repo id: 'owner/name', each part letters, "
            "digits, '-', '_' or '.' (no '--' or '..', at most 96 characters)"
        )
    if revision is not None and (not _REVISION.match(revision) or ".." in revision):
        problems.append(
            f"revision: {revision[:120]!r} is not a git revision; pin the commit hash (40 hex "
            "digits) from the repo's history, or a tag"
        )
    return problems


def download_adapter(
    repo_id: str,
    revision: str,
    dest: Path,
    *,
    endpoint: str,
    cache_dir: Path,
    offline: bool,
    token: str | None = None,
) -> str:
    """Fetch the PEFT files of ``repo_id`` at ``revision`` into the empty folder ``dest`` as plain
    files (the cache keeps symbolic links); returns the commit hash the revision resolved to.

    Only :data:`ADAPTER_FILES` are downloaded; a file the repo lacks is simply absent in
    ``dest``, for the adapter check to report.
    """
    import huggingface_hub
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()  # a server has no terminal to draw them on
    try:
        snapshot = Path(
            huggingface_hub.snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                allow_patterns=list(ADAPTER_FILES),
                endpoint=endpoint,
                token=token or False,
                local_files_only=offline,
                library_name="loraloop",
                library_version=__version__,
            )
        )
    except Exception as error:
        raise _hub_error(error, repo_id, revision, endpoint, offline=offline) from None
    dest.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        if (snapshot / name).is_file():
            shutil.copyfile(snapshot / name, dest / name)  # follows the cache's link to the blob
    return snapshot.name  # snapshots are named by their commit


def push_folder(
    folder: Path,
    repo_id: str,
    *,
    token: str,
    endpoint: str,
    private: bool,
    commit_message: str,
) -> Pushed:
    """Create ``repo_id`` (a model repo; kept if it exists) and commit every file of ``folder``."""
    from huggingface_hub import HfApi
    from huggingface_hub.utils.tqdm import disable_progress_bars

    disable_progress_bars()
    api = HfApi(endpoint=endpoint, library_name="loraloop", library_version=__version__)
    try:
        url = api.create_repo(
            repo_id, token=token, private=private, exist_ok=True, repo_type="model"
        )
        info: Any = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            token=token,
            repo_type="model",
            commit_message=commit_message,
        )
    except Exception as error:
        raise _hub_error(error, repo_id, None, endpoint, offline=False) from None
    return Pushed(repo_id=repo_id, url=str(url), commit_url=info.commit_url, commit=info.oid)


def _hub_error(
    error: Exception, repo_id: str, revision: str | None, endpoint: str, *, offline: bool
) -> LoraloopError:
    """The loraloop error for a hub failure. ``from None`` at the raise: the hub's own exception
    (with its request headers) never travels further."""
    import httpx2
    from huggingface_hub import errors

    where = f"{repo_id}@{revision}" if revision else repo_id
    if isinstance(error, errors.GatedRepoError):
        return InvalidRequest(
            f"{repo_id} is gated on {endpoint}: accept its terms there, then send a token of "
            "that account",
            code="hub_gated",
            param="token",
        )
    if isinstance(error, errors.RepositoryNotFoundError):
        return InvalidRequest(
            f"{endpoint} has no repo {repo_id!r}, or it is private (send a token that may read "
            "it); check the spelling as owner/name",
            code="hub_repo_not_found",
            param="hub_repo",
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return InvalidRequest(
            f"{repo_id} has no revision {revision!r}; pin a commit hash from its history",
            code="hub_revision_not_found",
            param="revision",
        )
    if isinstance(error, errors.LocalEntryNotFoundError):
        if offline:
            return InvalidRequest(
                f"{where} is not in the hub cache, and hub_offline is on: fill the cache on a "
                "machine that can reach the hub, or turn hub_offline off",
                code="hub_offline",
                param="hub_repo",
            )
        return UpstreamFailed(f"could not reach the hub at {endpoint} for {where}; try again")
    if isinstance(error, errors.HfHubHTTPError) and error.response is not None:
        return _http_error(error.response.status_code, _server_message(error), repo_id, endpoint)
    if isinstance(error, httpx2.TransportError):
        return UpstreamFailed(f"could not reach the hub at {endpoint} ({type(error).__name__})")
    if isinstance(error, ValueError):  # huggingface_hub's own argument checks
        return InvalidRequest(f"the hub refused {where}: {error}", code="hub_refused")
    # unexpected: the traceback is for the operator (it holds no token: that is an argument,
    # and tracebacks do not show arguments); the user gets the kind of failure
    log.error("hub transfer of %s with %s failed", where, endpoint, exc_info=error)
    return UpstreamFailed(f"the transfer with {endpoint} failed ({type(error).__name__})")


def _http_error(status: int, message: str, repo_id: str, endpoint: str) -> LoraloopError:
    namespace = repo_id.split("/", 1)[0]
    if status == 401:
        return InvalidRequest(
            f"{endpoint} refused the token (401): it is wrong or expired; make a new one with "
            "write access in your hub settings",
            code="hub_unauthorized",
            param="token",
        )
    if status == 403:
        return InvalidRequest(
            f"the token may not write to {namespace!r} on {endpoint} (403): give it write "
            "access to that user or organisation",
            code="hub_forbidden",
            param="token",
        )
    if 400 <= status < 500:
        return InvalidRequest(
            f"{endpoint} refused {repo_id} ({status}): {message}", code="hub_refused"
        )
    return UpstreamFailed(f"{endpoint} failed ({status}): {message}")


def _server_message(error: Any) -> str:
    """The hub's own one-line reason (``server_message``), bounded; never the request."""
    text = str(getattr(error, "server_message", "") or "").strip().splitlines()
    return (text[0] if text else "no reason given")[:300]
