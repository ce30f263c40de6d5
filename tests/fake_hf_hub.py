"""A small fake of the Hugging Face Hub's HTTP API, for running real ``huggingface_hub`` code
offline on 127.0.0.1: the endpoints ``snapshot_download`` calls (revision, tree, resolve) and
the ones ``HfApi.create_repo`` and ``upload_folder`` call (repos/create, preupload, commit).

The preupload answer puts every file in "regular" mode, so files travel inline (base64) in the
commit, as the real hub has small files do; LFS and Xet uploads are not implemented. Errors
carry the hub's ``X-Error-Code`` / ``X-Error-Message`` headers, which is how the client tells
a missing repo, a missing revision and a bad token apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

__all__ = ["FakeHub"]


def blob_oid(data: bytes) -> str:
    """The git blob id, as the hub reports a regular file's ``oid`` and ``ETag``."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()  # noqa: S324 - git's id


@dataclass
class Repo:
    owner: str
    private: bool
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    """(commit oid, every file at that commit), oldest first."""


@dataclass
class Seen:
    method: str
    path: str
    authorization: str | None


class FakeHub:
    """``tokens`` maps each valid token to the user (namespace) it belongs to."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.tokens = tokens
        self.repos: dict[str, Repo] = {}
        self.seen: list[Seen] = []
        self.app = self._build()

    # -- test helpers ------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, private: bool = False) -> str:
        """Create ``repo_id`` with one commit holding ``files``; returns the commit id."""
        self.repos[repo_id] = Repo(owner=repo_id.split("/")[0], private=private)
        return self._commit(repo_id, files)

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files at the head of ``repo_id``."""
        return dict(self.repos[repo_id].commits[-1][1])

    # -- the hub -----------------------------------------------------------------------------

    def _commit(self, repo_id: str, files: dict[str, bytes]) -> str:
        repo = self.repos[repo_id]
        parent = repo.commits[-1][0] if repo.commits else ""
        listing = json.dumps({k: blob_oid(v) for k, v in sorted(files.items())})
        oid = hashlib.sha1(f"{parent}{listing}".encode()).hexdigest()  # noqa: S324
        repo.commits.append((oid, dict(files)))
        return oid

    def _user(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        return self.tokens.get(header.removeprefix("Bearer ")) if header else None

    def _repo(
        self, request: Request, repo_id: str, revision: str | None = None
    ) -> tuple[Repo, str, dict[str, bytes]] | Response:
        """The repo and the commit ``revision`` names, or the hub's error response."""
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and self._user(request) != repo.owner):
            return _error(404 if repo is None else 401, "RepoNotFound", "Repository not found")
        if revision in (None, "main"):
            oid, files = repo.commits[-1]
            return repo, oid, files
        for oid, files in repo.commits:
            if oid == revision:
                return repo, oid, files
        return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _writer(self, request: Request, namespace: str) -> Response | None:
        user = self._user(request)
        if user is None:
            return JSONResponse(
                {"error": "Invalid credentials in Authorization header"},
                status_code=401,
                headers={"X-Error-Message": "Invalid credentials in Authorization header"},
            )
        if user != namespace:
            return JSONResponse({"error": "You don't have the rights"}, status_code=403)
        return None

    def _build(self) -> FastAPI:
        app = FastAPI()

        @app.middleware("http")
        async def record(request: Request, call_next: Any) -> Response:
            auth = request.headers.get("authorization")
            self.seen.append(Seen(request.method, request.url.path, auth))
            response: Response = await call_next(request)
            return response

        @app.get("/healthz")
        def health() -> dict[str, str]:
            return {"status": "ok"}

        @app.post("/api/repos/create")
        async def create_repo(request: Request) -> Response:
            body = await request.json()
            namespace = body.get("organization") or self._user(request) or ""
            refused = self._writer(request, namespace)
            if refused is not None:
                return refused
            repo_id = f"{namespace}/{body['name']}"
            if repo_id in self.repos:
                return JSONResponse({"error": "You already created this model repo"}, 409)
            private = body.get("visibility", "public") == "private" or bool(body.get("private"))
            self.add_repo(
                repo_id, {".gitattributes": b"*.safetensors filter=lfs\n"}, private=private
            )
            return JSONResponse({"url": f"{request.base_url}{repo_id}", "name": repo_id})

        @app.get("/api/models/{ns}/{name}/revision/{revision}")
        def revision_info(ns: str, name: str, revision: str, request: Request) -> Response:
            found = self._repo(request, f"{ns}/{name}", revision)
            if isinstance(found, Response):
                return found
            repo, oid, files = found
            siblings = [{"rfilename": path} for path in sorted(files)]
            body = {"id": f"{ns}/{name}", "sha": oid, "private": repo.private, "siblings": siblings}
            return JSONResponse(body)

        @app.get("/api/models/{ns}/{name}/tree/{revision}")
        def tree(ns: str, name: str, revision: str, request: Request) -> Response:
            found = self._repo(request, f"{ns}/{name}", revision)
            if isinstance(found, Response):
                return found
            _, _, files = found
            return JSONResponse([
                {"type": "file", "path": path, "size": len(data), "oid": blob_oid(data)}
                for path, data in sorted(files.items())
            ])  # fmt: skip

        @app.api_route("/{ns}/{name}/resolve/{revision}/{path:path}", methods=["GET", "HEAD"])
        def resolve(ns: str, name: str, revision: str, path: str, request: Request) -> Response:
            found = self._repo(request, f"{ns}/{name}", revision)
            if isinstance(found, Response):
                return found
            _, oid, files = found
            if path not in files:
                response = _error(404, "EntryNotFound", f"{path} does not exist")
                response.headers["X-Repo-Commit"] = oid
                return response
            data = files[path]
            headers = {"X-Repo-Commit": oid, "ETag": f'"{blob_oid(data)}"'}
            if request.method == "HEAD":
                headers["Content-Length"] = str(len(data))
                return Response(status_code=200, headers=headers)
            return Response(data, media_type="application/octet-stream", headers=headers)

        @app.post("/api/validate-yaml")
        def validate_yaml() -> dict[str, list[str]]:
            return {"errors": [], "warnings": []}

        @app.post("/api/models/{ns}/{name}/preupload/{revision}")
        async def preupload(ns: str, name: str, revision: str, request: Request) -> Response:
            refused = self._writer(request, ns)
            if refused is not None:
                return refused
            found = self._repo(request, f"{ns}/{name}", revision)
            if isinstance(found, Response):
                return found
            wanted = (await request.json())["files"]
            return JSONResponse({
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in wanted
                ]
            })  # fmt: skip

        @app.post("/api/models/{ns}/{name}/commit/{revision}")
        async def commit(ns: str, name: str, revision: str, request: Request) -> Response:
            refused = self._writer(request, ns)
            if refused is not None:
                return refused
            repo_id = f"{ns}/{name}"
            found = self._repo(request, repo_id, revision)
            if isinstance(found, Response):
                return found
            _, _, files = found
            files = dict(files)
            for line in (await request.body()).splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    files[value["path"]] = base64.b64decode(value["content"])
                elif item["key"] != "header":
                    return JSONResponse({"error": f"{item['key']} is not faked"}, 400)
            oid = self._commit(repo_id, files)
            url = f"{request.base_url}{repo_id}/commit/{oid}"
            return JSONResponse({"commitUrl": url, "commitOid": oid, "success": True})

        return app


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": message},
        status_code=status,
        headers={"X-Error-Code": code, "X-Error-Message": message},
    )
