"""``loraloop worker --server URL --token T``: lend this machine to a loraloop server.

The agent registers the node with what it can run, long-polls for a job, downloads the job's
inputs and checks each against its sha256, runs the job in a child process with the same
``ml/`` code the server runs (:mod:`loraloop.jobs.supervisor`), heartbeats while it runs,
uploads the result in resumable chunks (training) or sends it in the completion (evaluation:
answers, scores and losses) and completes. It speaks only the documented HTTP API
(``/api/worker/...``), never the database. Network trouble is retried with exponential
backoff; a 409 on a job means the lease is gone, and the job's child is stopped.
"""

from __future__ import annotations

import logging
import os
import platform
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx

from loraloop import __version__
from loraloop.jobs import supervisor
from loraloop.storage import contained, sha256_file

__all__ = ["Agent", "ServerRefused", "capabilities", "local_payload"]

log = logging.getLogger(__name__)
_CHUNK = 4 * 1024 * 1024


class ServerRefused(Exception):
    """A 4xx other than 429: retrying the same request would not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def capabilities() -> dict[str, Any]:
    """What this machine can run, as the server's scheduler reads it."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1)})
    pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    memory = pages * os.sysconf("SC_PAGE_SIZE") / 2**30 if pages else 1.0
    return {
        "cpu_count": os.cpu_count() or 1,
        "memory_gb": round(memory, 1),
        "gpus": gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "platform": platform.platform(),
        "loraloop": __version__,
    }


class Agent:
    def __init__(
        self,
        server: str,
        token: str,
        *,
        name: str,
        workdir: Path,
        wait_seconds: float = 20.0,
        give_up_seconds: float = 600.0,
        once: bool = False,
    ) -> None:
        self.server = server.rstrip("/")
        self.name = name
        self.workdir = workdir
        self.wait_seconds = wait_seconds
        self.give_up_seconds = give_up_seconds
        self.once = once
        self.stop = threading.Event()
        self.node_id: int | None = None
        self.lease_seconds = 60
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(wait_seconds + 30.0, connect=10.0),
        )

    # HTTP, with retries -------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One API call, retried with exponential backoff (and jitter) on network errors,
        429 and 5xx, for up to ``give_up_seconds``; other 4xx raise :class:`ServerRefused`."""
        delay, deadline = 1.0, time.monotonic() + self.give_up_seconds
        while True:
            try:
                response = self._http.request(method, self.server + path, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                wait = delay
            else:
                if response.status_code < 400:
                    return response
                if response.status_code != 429 and response.status_code < 500:
                    raise ServerRefused(response.status_code, _message(response))
                problem = f"{response.status_code}: {_message(response)}"
                wait = float(response.headers.get("retry-after", delay))
            if self.stop.is_set() or time.monotonic() + wait > deadline:
                raise ConnectionError(f"giving up on {method} {path}: {problem}")
            log.warning("%s %s failed (%s); retrying in %.0f s", method, path, problem, wait)
            self.stop.wait(wait * random.uniform(0.8, 1.2))  # noqa: S311 (jitter)
            delay = min(delay * 2, 60.0)

    # the loop -----------------------------------------------------------------------------

    def register(self) -> int:
        body = self.call(
            "POST",
            "/api/worker/register",
            json={"name": self.name, "capabilities": capabilities()},
        ).json()
        self.node_id, self.lease_seconds = int(body["node_id"]), int(body["lease_seconds"])
        log.info("registered as node %s (trusted: %s)", self.node_id, body["trusted"])
        return self.node_id

    def run(self) -> None:
        """Register, then claim and run jobs until stopped (or one job, with ``once``)."""
        self.register()
        while not self.stop.is_set():
            response = self.call(
                "POST",
                "/api/worker/claim",
                json={"node_id": self.node_id, "wait_seconds": self.wait_seconds},
            )
            if response.status_code == 204:
                continue
            self.run_job(response.json())
            if self.once:
                return

    def run_job(self, job: dict[str, Any]) -> None:
        job_id, token = int(job["id"]), str(job["lease_token"])
        lease = _HttpLease(self, job_id, token)
        folder = self.workdir / f"job-{job_id}-attempt-{job['attempt']}"
        try:
            payload = self.prepare(job, folder, token)
            self.call("POST", f"/api/worker/jobs/{job_id}/start", json={"lease_token": token})
            outcome = supervisor.run_child(
                job["kind"],
                payload,
                lease,
                beat_every=max(1.0, self.lease_seconds / 3),
                stopping=self.stop.is_set,
            )
            if outcome.stopped:
                log.info("job %s: the lease is gone; stopped", job_id)
                return
            failure = outcome.failure()
            if failure is not None:
                self._fail(job_id, token, *failure)
                return
            assert outcome.result is not None
            result = self.deliver(job, token, outcome.result)
            self.call(
                "POST",
                f"/api/worker/jobs/{job_id}/complete",
                json={"lease_token": token, "result": result},
            )
            log.info("job %s: done", job_id)
        except ServerRefused as exc:
            log.warning("job %s: the server refused: %s", job_id, exc)
            if exc.status != 409:
                self._fail(job_id, token, f"the server refused: {exc.message}", False)
        except (OSError, ValueError) as exc:  # a bad download, a full disk
            self._fail(job_id, token, f"{type(exc).__name__}: {exc}", True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _fail(self, job_id: int, token: str, message: str, retryable: bool) -> None:
        try:
            self.call(
                "POST",
                f"/api/worker/jobs/{job_id}/fail",
                json={"lease_token": token, "error": message[:9000], "retryable": retryable},
            )
        except (ServerRefused, ConnectionError) as exc:
            log.warning("job %s: could not report the failure: %s", job_id, exc)

    # inputs and outputs -------------------------------------------------------------------

    def prepare(self, job: dict[str, Any], folder: Path, token: str) -> dict[str, Any]:
        """Download and check every input; the payload with this machine's paths."""
        payload = job["payload"]
        if "files" not in payload:  # a trusted worker sharing the server's data folder
            return dict(payload)
        folder.mkdir(parents=True, exist_ok=True)
        for name, meta in payload["files"].items():
            target = _inside(folder / "inputs", name)
            self.download(int(job["id"]), token, name, target, meta["sha256"])
        return local_payload(job["kind"], payload, folder, self.workdir / "models")

    def download(self, job_id: int, token: str, name: str, target: Path, sha256: str) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with self._http.stream(
            "GET",
            f"{self.server}/api/worker/jobs/{job_id}/inputs/{name}",
            headers={"X-Lease-Token": token},
        ) as response:
            if response.status_code >= 400:
                raise ServerRefused(response.status_code, f"downloading {name}")
            with target.open("wb") as handle:
                for piece in response.iter_bytes():
                    handle.write(piece)
        if sha256_file(target) != sha256:
            raise ValueError(f"{name}: the download does not match its sha256 {sha256}")

    def deliver(self, job: dict[str, Any], token: str, result: dict[str, Any]) -> dict[str, Any]:
        """Upload the artifact a provider job made; the result the server is told."""
        payload = job["payload"]
        if "uploads" not in payload:
            return result
        folder = Path(result["adapter_dir"])
        self.before_upload(folder)
        found = {name: folder / name for name in payload["uploads"] if (folder / name).exists()}
        trail = folder.parent / "checkpoints"  # the audit trail the verifier replays from
        if trail.is_dir():
            for path in sorted(trail.glob("step-*/*")):
                found[f"checkpoints/{path.parent.name}/{path.name}"] = path
        files = {}
        for name, path in found.items():
            self.upload(int(job["id"]), token, name, path)
            files[name] = sha256_file(path)
        return {"files": files, "metrics": result.get("metrics") or {}}

    def before_upload(self, folder: Path) -> None:
        """A hook before the artifact leaves the machine (nothing by default)."""

    def upload(self, job_id: int, token: str, name: str, path: Path) -> None:
        """Resumable: ask how much arrived, send the rest in chunks."""
        url = f"/api/worker/uploads/{job_id}/{name}"
        headers = {"X-Lease-Token": token}
        size = path.stat().st_size
        offset = int(self.call("GET", url, headers=headers).json()["size"])
        with path.open("rb") as handle:
            while offset < size or (size == 0 and offset == 0):
                handle.seek(offset)
                chunk = handle.read(_CHUNK)
                try:
                    offset = int(
                        self.call(
                            "PUT", url, params={"offset": offset}, content=chunk, headers=headers
                        ).json()["size"]
                    )
                except ServerRefused as exc:
                    if exc.status != 409 or "upload_offset" not in exc.message:
                        raise
                    offset = int(self.call("GET", url, headers=headers).json()["size"])
                if size == 0:
                    break


def _inside(folder: Path, name: str) -> Path:
    """``folder / name``, refusing a name that climbs out of ``folder``."""
    target = (folder / name).resolve()
    if not contained(folder, target) or target == folder.resolve():
        raise ValueError(f"input name {name!r} points outside the job's folder")
    return target


def local_payload(kind: str, payload: dict[str, Any], folder: Path, models: Path) -> dict[str, Any]:
    """The claimed payload with this machine's paths to its downloads in ``folder/inputs``:
    the base (or the default base in ``models``), then the training split and an output
    folder (training) or each version's adapter folder (evaluation)."""
    inputs = folder / "inputs"
    base = payload["base"]
    if base.get("default"):
        from loraloop.ml.models import DEFAULT_BASE

        base_path = models / DEFAULT_BASE
    else:
        base_path = inputs / "base"
    local = {
        **{k: v for k, v in payload.items() if k not in ("files", "base", "uploads")},
        "base_path": str(base_path),
        "base_default": bool(base.get("default")),
        "models_dir": str(models),
    }
    if kind == "evaluate":
        local["versions"] = [
            {**v, "path": str(inputs / "version" / str(v["id"]))} for v in payload["versions"]
        ]
        return local
    return {**local, "train_file": str(inputs / "train_file"), "output_dir": str(folder / "run")}


class _HttpLease:
    def __init__(self, agent: Agent, job_id: int, token: str) -> None:
        self.agent, self.job_id, self.token = agent, job_id, token

    def _post(self, action: str, body: dict[str, Any]) -> None:
        try:
            self.agent.call("POST", f"/api/worker/jobs/{self.job_id}/{action}", json=body)
        except ServerRefused as exc:
            if exc.status == 409:
                raise supervisor.Stop(exc.message) from exc
            raise

    def heartbeat(self) -> None:
        self._post("heartbeat", {"lease_token": self.token})

    def event(self, data: dict[str, Any]) -> None:
        self._post("events", {"lease_token": self.token, "data": data})


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
