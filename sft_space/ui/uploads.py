"""What one request may carry. Gradio caps each uploaded file's size (max_file_size), not how many files one request
sends, nor any other request's body: a script could post many 50 MB files at once and keep them an hour, or a 300 MB
JSON body to the queue (read whole into memory before anything looks at it). This ASGI middleware caps:
- every request's body on every route but the upload route at REQUEST_BYTES: the declared length before anything is
  read, and a chunked body (no declared length) as it streams by, cut off at the cap;
- the upload route, on a public host: a declared length (a chunked upload is refused before a byte is read, so a
  refused upload leaves no partial file), at most the files and bytes the host allows, the files counted as the body
  streams by (the multipart boundary counted in each chunk).
A refusal is a 413 (411 for a chunked upload) with the reason as JSON, and the rest of the body is dropped."""

from __future__ import annotations

import json

from ..host import limits

OVERHEAD_BYTES = 64 * 1024  # multipart headers around the files


def upload_caps() -> tuple[int | None, int | None]:
    """(files per request, bytes per request) on this host; None = no cap."""
    quota = limits.current()
    files = quota.upload_files
    size = int(quota.upload_mb * 2**20) * (files or 1) + OVERHEAD_BYTES if quota.upload_mb and files else None
    return files, size


def _boundary(scope) -> bytes | None:
    """The multipart boundary as the parser behind Gradio's upload route reads it (python_multipart)."""
    from python_multipart.multipart import parse_options_header

    for key, value in scope.get("headers", []):
        if key == b"content-type":
            boundary = parse_options_header(value)[1].get(b"boundary")
            return b"--" + boundary if boundary else None
    return None


def _declared_length(scope) -> int | None:
    """The body's declared length; None when it has none, or also names a Transfer-Encoding (the server then reads
    it chunked, whatever length it declares)."""
    headers = scope.get("headers", [])
    if any(key == b"transfer-encoding" for key, _ in headers):
        return None
    for key, value in headers:
        if key == b"content-length" and value.isdigit():
            return int(value)
    return None


REQUEST_BYTES = 2 * 2**20  # any other request: a chat message, settings, a Gradio event (kilobytes in real use)


async def _refuse(send, message: str, status: int = 413) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


async def _counted(app, scope, receive, send, over, message: str) -> None:
    """Run the app with the body counted as it streams by: when over(chunk, seen) says so, the app reads a
    disconnect, its answer is dropped, and the client gets 413 with `message`."""
    seen = {"bytes": 0, "refused": False}

    async def counted_receive():
        incoming = await receive()
        if incoming.get("type") != "http.request" or seen["refused"]:
            return incoming
        seen["bytes"] += len(incoming.get("body", b""))
        if over(incoming.get("body", b""), seen):
            seen["refused"] = True
            return {"type": "http.disconnect"}
        return incoming

    async def quiet_send(outgoing):
        if not seen["refused"]:
            await send(outgoing)

    try:
        await app(scope, counted_receive, quiet_send)
    except Exception:
        if not seen["refused"]:
            raise
    if seen["refused"]:
        await _refuse(send, message)


class UploadGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = _declared_length(scope)
        if scope.get("method") == "POST" and scope["path"].endswith("/upload"):
            return await self._upload(scope, receive, send, declared)
        too_big = f"A request may carry at most {REQUEST_BYTES // 1024:,} KB here (files go through the upload)."
        if declared is not None and declared > REQUEST_BYTES:
            return await _refuse(send, too_big)
        await _counted(self.app, scope, receive, send, lambda _chunk, seen: seen["bytes"] > REQUEST_BYTES, too_big)

    async def _upload(self, scope, receive, send, declared: int | None):
        files, size = upload_caps()
        if files is None and size is None:
            return await self.app(scope, receive, send)
        if declared is None:  # chunked: refused before the parser writes a byte of it to disk
            return await _refuse(send, "An upload must declare its length (Content-Length) on this Space.", 411)
        too_big = (
            f"An upload request may carry at most {files} file(s) and {(size or 0) / 2**20:,.0f} MB on this Space."
        )
        if size is not None and declared > size:
            return await _refuse(send, too_big)
        boundary = _boundary(scope)
        parts = {"count": 0, "tail": b""}

        def over(chunk: bytes, seen: dict) -> bool:
            if boundary:  # each part starts with the boundary line; the closing one ends with "--"
                chunk = parts["tail"] + chunk
                parts["count"] += chunk.count(boundary + b"\r\n")
                parts["tail"] = chunk[-len(boundary) - 1 :]  # a boundary split across chunks, never one counted twice
            return (files is not None and parts["count"] > files) or (size is not None and seen["bytes"] > size)

        await _counted(self.app, scope, receive, send, over, too_big)
