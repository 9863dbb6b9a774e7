"""A small Hugging Face Hub-compatible HTTP server for tests (no network needed).

It answers the requests the real `huggingface_hub` client makes for repository
information and file downloads, so code under test runs unchanged with
`HF_ENDPOINT` pointed at it:

    GET  /api/{datasets|models}/{owner}/{name}[/revision/{rev}]   repo info (sha, siblings, gated, private)
    GET  /api/{datasets|models}/{owner}/{name}/tree/{rev}          the file list (sizes), as snapshot_download reads it
    GET  /{datasets/}{owner}/{name}/resolve/{rev}/{path}           a file (HEAD too), with X-Repo-Commit and ETag;
                                                                   a Range header gets 206 and just those bytes
    ({rev}: an earlier commit's sha reads that commit, any other revision the latest files, as main does)

    GET  /api/whoami-v2                                            the user a token belongs to (401 otherwise)
    POST /api/validate-yaml                                        a README's metadata block (400 unless a YAML mapping)
    POST /api/repos/create                                         a new repo (409 if it exists; 403 outside your name)
    GET  /api/spaces/{owner}/{name}/runtime, POST .../pause         a Space's runtime (hardware, stage) and its pause
    POST /api/{models|datasets}/{id}/preupload/{rev}, /commit/{rev}  uploads: every file inline, one atomic commit
    POST /api/jobs/{namespace}, GET /api/jobs/{namespace}/{id}[/logs] Jobs: submit, inspect, logs (server-sent events)

Behaviour copied from the Hub: a missing repo and a private repo asked for without
a token both answer 401/404 with X-Error-Code RepoNotFound; a gated repo's info is
public but its files answer 403 GatedRepo unless the request carries a token the
repo accepts. Use `HubServer` as a context manager, add repos with `add_repo`.
"""

from __future__ import annotations

import base64
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
    history: dict[str, dict[str, bytes]] = field(default_factory=dict)  # earlier commits' files, by their sha

    @property
    def sha(self) -> str:
        return files_sha(self.files)

    def commit(self, files: dict[str, bytes | str]) -> str:
        """Add or change files in one new commit on main; the commit before stays readable by its sha."""
        self.history[self.sha] = dict(self.files)
        self.files.update({path: data.encode() if isinstance(data, str) else data for path, data in files.items()})
        return self.sha

    def at(self, revision: str | None) -> dict[str, bytes]:
        """The files at a revision: an earlier commit's by its sha, else the latest (main, or any other name)."""
        return self.history.get(revision or "", self.files)


def files_sha(files: dict[str, bytes]) -> str:
    """A commit's sha: a hash of its files, so the same files always give the same commit."""
    digest = hashlib.sha1()
    for path in sorted(files):
        digest.update(path.encode() + files[path])
    return digest.hexdigest()


class HubServer:
    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[str] = []  # every path asked for, for tests that check what was (not) downloaded
        self.tokens: list[str | None] = []  # the token each request carried (None: none), for tests of who reads
        self.ranges: list[tuple[str, int, int]] = []  # (file, first byte, last byte) of every partial read
        self.downloads: list[str] = []  # every file sent whole (GET without a Range header)
        self.users: dict[str, str] = {}  # token -> username, for whoami and writes
        # Spaces by id -> their runtime as the Hub reports it (stage, hardware): GET .../runtime, POST .../pause
        self.spaces: dict[str, dict] = {}
        self.paused: list[str] = []  # the Spaces a pause request was accepted for, in order
        self.fail_commits = 0  # the next N commits answer 500 and change nothing (a flaky network)
        self.refuse_commits = 0  # the next N commits answer 412 (which the client does not retry by itself)
        self.commits: list[dict] = []  # every commit that landed: repo, message, files
        self.jobs: dict[str, dict] = {}  # job id -> the job spec as posted, with its status and logs
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def do_HEAD(self) -> None:
                server.handle(self, head=True)

            def do_GET(self) -> None:
                server.handle(self, head=False)

            def do_POST(self) -> None:
                server.handle_post(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "HubServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_space(self, space_id: str, hardware: str) -> dict:
        """A running Space on `hardware` (cpu-basic, a10g-small, zero-a10g...), as its runtime reports it."""
        self.spaces[space_id] = {"stage": "RUNNING", "hardware": {"current": hardware, "requested": hardware}}
        return self.spaces[space_id]

    def add_repo(self, repo_id: str, files: dict[str, bytes | str], kind: str = "dataset", **options) -> Repo:
        encoded = {path: data.encode() if isinstance(data, str) else data for path, data in files.items()}
        repo = Repo(repo_id, kind, encoded, **options)
        self.repos[(kind, repo_id)] = repo
        return repo

    # ------------------------------------------------------------ requests
    def _token(self, request) -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[len("Bearer ") :] if auth.startswith("Bearer ") else None

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
        self._send(
            request,
            status,
            body,
            {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"},
            head,
        )

    def handle(self, request, head: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append(path)
        parts = [p for p in path.split("/") if p]
        token = self._token(request)
        self.tokens.append(token)
        if parts == ["api", "whoami-v2"]:
            if token not in self.users:
                return self._error(request, 401, "Unauthorized", "Invalid credentials in Authorization header", head)
            body = {"type": "user", "name": self.users[token], "orgs": [], "auth": {"accessToken": {"role": "write"}}}
            return self._send(request, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
        if parts[:2] == ["api", "jobs"] and len(parts) >= 4:
            return self._job(request, parts, token, head)
        if parts[:2] == ["api", "spaces"] and len(parts) == 5 and parts[4] == "runtime":
            space = self.spaces.get(f"{parts[2]}/{parts[3]}")  # a public Space: anyone may read its runtime
            if space is None:
                return self._error(request, 404, "RepoNotFound", "Repository not found", head)
            return self._send(request, 200, json.dumps(space).encode(), {"Content-Type": "application/json"}, head)
        if parts[:1] == ["api"] and len(parts) >= 4 and parts[1] in ("datasets", "models"):
            kind = parts[1][:-1]
            repo = self.repos.get((kind, f"{parts[2]}/{parts[3]}"))
            if repo is None or (repo.private and token not in repo.allowed_tokens):
                return self._error(request, 401 if token is None else 404, "RepoNotFound", "Repository not found", head)
            files = repo.at(parts[5] if len(parts) >= 6 and parts[4] in ("tree", "revision") else None)
            if len(parts) >= 6 and parts[4] == "tree":  # the file list snapshot_download walks
                tree = [
                    {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                    for name, data in sorted(files.items())
                ]
                return self._send(request, 200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, head)
            info = {
                "id": repo.repo_id,
                "sha": files_sha(files),
                "private": repo.private,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "cardData": repo.card_data,
                "lastModified": "2026-01-01T00:00:00.000Z",
                "siblings": [{"rfilename": name} for name in sorted(files)],
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
            name, files = "/".join(parts[4:]), repo.at(parts[3])
            if name not in files:
                return self._error(request, 404, "EntryNotFound", f"{name} does not exist", head)
            data = files[name]
            etag = f'"{hashlib.sha1(data).hexdigest()}"'
            headers = {
                "X-Repo-Commit": files_sha(files),
                "ETag": etag,
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
            }
            wanted = request.headers.get("Range", "")
            if wanted.startswith("bytes=") and not head:  # partial reads, as the Hub's CDN serves them
                first, _, last = wanted[len("bytes=") :].partition("-")
                if first == "":  # the last N bytes
                    start, end = max(0, len(data) - int(last)), len(data) - 1
                else:
                    start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                self.ranges.append((name, start, end))
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                return self._send(request, 206, data[start : end + 1], headers, head)
            if not head:
                self.downloads.append(name)
            return self._send(request, 200, data, headers, head)
        return self._error(request, 404, "NotFound", "Not found", head)

    # ------------------------------------------------------------ writes
    def _read_body(self, request) -> bytes:
        return request.rfile.read(int(request.headers.get("Content-Length", 0) or 0))

    def _writer(self, request, repo_id: str) -> str | None:
        """The user a write is allowed for, after answering 401/403 itself when it is not."""
        token = self._token(request)
        if token not in self.users:
            self._error(request, 401, "Unauthorized", "Invalid credentials in Authorization header", False)
            return None
        if repo_id.split("/")[0] != self.users[token]:
            self._error(request, 403, "Forbidden", f"You don't have the rights to write to {repo_id}", False)
            return None
        return self.users[token]

    def handle_post(self, request) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append(f"POST {path}")
        parts = [p for p in path.split("/") if p]
        body = self._read_body(request)
        json_headers = {"Content-Type": "application/json"}
        if parts[:2] == ["api", "spaces"] and len(parts) == 5 and parts[4] == "pause":
            space_id = f"{parts[2]}/{parts[3]}"
            if space_id not in self.spaces or self._writer(request, space_id) is None:
                return None if space_id in self.spaces else self._error(request, 404, "RepoNotFound", "no", False)
            self.spaces[space_id]["stage"] = "PAUSED"
            self.paused.append(space_id)
            return self._send(request, 200, json.dumps(self.spaces[space_id]).encode(), json_headers)
        if parts == ["api", "validate-yaml"]:  # the client checks a README's metadata before committing it
            import yaml

            content = json.loads(body)["content"]
            try:
                meta = yaml.safe_load(content.split("---")[1]) if content.startswith("---") else {}
                assert isinstance(meta, dict)
            except Exception as error:
                return self._error(request, 400, "BadRequest", f"Invalid metadata in README.md: {error}", False)
            return self._send(request, 200, json.dumps({"errors": [], "warnings": []}).encode(), json_headers)
        if parts == ["api", "repos", "create"]:
            data = json.loads(body)
            kind = data.get("type") or "model"
            repo_id = f"{data.get('organization') or self.users.get(self._token(request), '?')}/{data['name']}"
            if self._writer(request, repo_id) is None:
                return
            url = f"{self.url}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
            if (kind, repo_id) in self.repos:
                return self._send(
                    request,
                    409,
                    json.dumps({"error": "You already created this model repo", "url": url}).encode(),
                    json_headers,
                )
            private = data.get("private") or data.get("visibility") == "private"
            self.add_repo(
                repo_id,
                {},
                kind=kind,
                private=bool(private),
                allowed_tokens={t for t, u in self.users.items() if u == repo_id.split("/")[0]},
            )
            return self._send(request, 200, json.dumps({"url": url, "name": repo_id}).encode(), json_headers)
        if (
            parts[:1] == ["api"]
            and len(parts) >= 6
            and parts[1] in ("models", "datasets")
            and parts[4] in ("preupload", "commit")
        ):
            kind, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
            repo = self.repos.get((kind, repo_id))
            if self._writer(request, repo_id) is None:
                return
            if repo is None:
                return self._error(request, 404, "RepoNotFound", "Repository not found", False)
            if parts[4] == "preupload":  # every file goes inline in the commit: no LFS storage to emulate
                files = [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                    for f in json.loads(body)["files"]
                ]
                return self._send(request, 200, json.dumps({"files": files}).encode(), json_headers)
            if self.fail_commits > 0:  # fails before touching the repo, as an interrupted commit does
                self.fail_commits -= 1
                return self._error(request, 500, "InternalError", "Internal Error - try again later", False)
            if self.refuse_commits > 0:  # a refusal the client does not retry by itself
                self.refuse_commits -= 1
                return self._error(request, 412, "PreconditionFailed", "A commit happened since: try again", False)
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(line["value"] for line in lines if line["key"] == "header")
            added = {
                line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines
                if line["key"] == "file"
            }
            repo.commit(added)  # all files of a commit land together
            self.commits.append({"repo": repo_id, "message": header.get("summary"), "files": sorted(added)})
            body = {"commitUrl": f"{self.url}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha, "success": True}
            return self._send(request, 200, json.dumps(body).encode(), json_headers)
        if parts[:2] == ["api", "jobs"] and len(parts) == 3:
            return self._create_job(request, parts[2], json.loads(body))
        return self._error(request, 404, "NotFound", "Not found", False)

    # ------------------------------------------------------------ Jobs
    def _create_job(self, request, namespace: str, spec: dict) -> None:
        token = self._token(request)
        if token not in self.users:
            return self._error(request, 401, "Unauthorized", "Invalid credentials in Authorization header", False)
        job_id = f"job{len(self.jobs) + 1:04d}"
        job = {
            "id": job_id,
            "createdAt": "2026-01-01T00:00:00.000Z",
            "owner": {"id": "u1", "name": namespace, "type": "user"},
            "status": {"stage": "RUNNING", "message": None},
            **spec,
            "logs": ["===== Job started =====", "Loading data", "step 1/2", "step 2/2", "Pushed"],
        }
        self.jobs[job_id] = job
        body = {k: v for k, v in job.items() if k != "logs"}
        return self._send(request, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _job(self, request, parts: list[str], token: str | None, head: bool) -> None:
        if token not in self.users:
            return self._error(request, 401, "Unauthorized", "Invalid credentials in Authorization header", head)
        job = self.jobs.get(parts[3])
        if job is None:
            return self._error(request, 404, "NotFound", "Job not found", head)
        if len(parts) == 5 and parts[4] == "logs":  # server-sent events, one log line each, then the stream ends
            events = "".join(
                f"data: {json.dumps({'timestamp': '2026-01-01T00:00:00Z', 'data': line})}\n\n" for line in job["logs"]
            )
            return self._send(request, 200, events.encode(), {"Content-Type": "text/event-stream"}, head)
        body = {k: v for k, v in job.items() if k != "logs"}
        return self._send(request, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)
