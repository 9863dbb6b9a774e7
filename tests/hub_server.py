"""A small Hugging Face Hub-compatible HTTP server for tests (no network needed).

It answers the requests the real `huggingface_hub` client makes for repository
information and file downloads, so code under test runs unchanged with
`HF_ENDPOINT` pointed at it:

    GET  /api/{datasets|models}/{owner}/{name}[/revision/{rev}]   repo info (sha, siblings, gated, private)
    GET  /api/{datasets|models}/{owner}/{name}/tree/{rev}          the file list (sizes), as snapshot_download reads it
    GET  /{datasets/}{owner}/{name}/resolve/{rev}/{path}           a file (HEAD too), with X-Repo-Commit and ETag;
                                                                   a Range header gets 206 and just those bytes

Behaviour copied from the Hub: a missing repo and a private repo asked for without
a token both answer 401/404 with X-Error-Code RepoNotFound; a gated repo's info is
public but its files answer 403 GatedRepo unless the request carries a token the
repo accepts. Use `HubServer` as a context manager, add repos with `add_repo`.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


@dataclass
class Repo:
    repo_id: str
    kind: str  # "dataset" or "model"
    files: dict[str, bytes]
    gated: bool = False
    private: bool = False
    allowed_tokens: set[str] = field(default_factory=set)
    card_data: dict = field(default_factory=dict)

    @property
    def sha(self) -> str:
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(path.encode() + self.files[path])
        return digest.hexdigest()


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[str] = []  # every path asked for, for tests that check what was (not) downloaded
        self.ranges: list[tuple[str, int, int]] = []  # (file, first byte, last byte) of every partial read
        self.downloads: list[str] = []  # every file sent whole (GET without a Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                server.handle(self, head=True)

            def do_GET(self) -> None:
                server.handle(self, head=False)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes | str], kind: str = "dataset", **options) -> Repo:
        encoded = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
        repo = Repo(repo_id, kind, encoded, **options)
        self.repos[(kind, repo_id)] = repo
        return repo

    # ------------------------------------------------------------ requests
    def _token(self, request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def _send(self, request, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        request.send_response(status)
        for key, value in (headers or {}).items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        if not head:
            request.wfile.write(body)

    def _error(self, request, status: int, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(request, status, body, {"X-Error-Code": code, "X-Error-Message": message,
                                          "Content-Type": "application/json"}, head)

    def handle(self, request, head: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append(path)
        parts = [p for p in path.split("/") if p]
        token = self._token(request)
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("datasets", "models"):
            kind = parts[1][:-1]
            repo = self.repos.get((kind, f"{parts[2]}/{parts[3]}"))
            if repo is None or (repo.private and token not in repo.allowed_tokens):
                return self._error(request, 401 if token is None else 404, "RepoNotFound", "Repository not found", head)
            if len(parts) >= 6 and parts[4] == "tree":  # the file list snapshot_download walks
                tree = [{"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                        for name, data in sorted(repo.files.items())]
                return self._send(request, 200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
            info = {
                "id": repo.repo_id, "sha": repo.sha, "private": repo.private,
                "gated": "manual" if repo.gated else False, "disabled": False, "downloads": 0, "likes": 0,
                "tags": [], "cardData": repo.card_data, "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }
            return self._send(request, 200, json.dumps(info).encode(), {"Content-Type": "application/json"}, head)
        if parts[:1] == ["datasets"]:
            kind, parts = "dataset", parts[1:]
        else:
            kind = "model"
        if len(parts) >= 5 and parts[2] == "resolve":
            repo = self.repos.get((kind, f"{parts[0]}/{parts[1]}"))
            if repo is None or (repo.private and token not in repo.allowed_tokens):
                return self._error(request, 401 if token is None else 404, "RepoNotFound", "Repository not found", head)
            if repo.gated and token not in repo.allowed_tokens:
                return self._error(request, 403, "GatedRepo", "Access to this gated repository is restricted", head)
            name = "/".join(parts[4:])
            if name not in repo.files:
                return self._error(request, 404, "EntryNotFound", f"{name} does not exist", head)
            data = repo.files[name]
            etag = f'"{hashlib.sha1(data).hexdigest()}"'
            headers = {"X-Repo-Commit": repo.sha, "ETag": etag, "Content-Type": "application/octet-stream",
                       "Accept-Ranges": "bytes"}
            wanted = request.headers.get("Range", "")
            if wanted.startswith("bytes=") and not head:  # partial reads, as the Hub's CDN serves them
                first, _, last = wanted[len("bytes="):].partition("-")
                if first == "":  # the last N bytes
                    start, end = max(0, len(data) - int(last)), len(data) - 1
                else:
                    start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                self.ranges.append((name, start, end))
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(request, 206, data[start:end + 1], headers, head)
            if not head:
                self.downloads.append(name)
            return self._send(request, 200, data, headers, head)
        return self._error(request, 404, "NotFound", "Not found", head)
