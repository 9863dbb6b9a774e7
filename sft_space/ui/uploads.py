"""Uploads one request may carry: Gradio caps each file's size (max_file_size), not how many files one request
sends, so a script could post many 50 MB files at once and keep them an hour. This ASGI middleware caps both on
Gradio's upload route: the declared length before anything is read, then the files as the body streams by (the
multipart boundary counted in each chunk), answering 413 with the reason and dropping the rest."""

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
    for key, value in scope.get("headers", []):
        if key == b"content-length" and value.isdigit():
            return int(value)
    return None


async def _refuse(send, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope["path"].endswith("/upload"):
            return await self.app(scope, receive, send)
        files, size = upload_caps()
        if files is None and size is None:
            return await self.app(scope, receive, send)
        declared = _declared_length(scope)
        too_big = (
            f"An upload request may carry at most {files} file(s) and {(size or 0) / 2**20:,.0f} MB on this Space."
        )
        if size is not None and declared is not None and declared > size:
            return await _refuse(send, too_big)
        boundary = _boundary(scope)
        seen = {"bytes": 0, "parts": 0, "tail": b"", "refused": False}

        async def counted_receive():
            message = await receive()
            if message.get("type") != "http.request" or seen["refused"]:
                return message
            chunk = seen["tail"] + message.get("body", b"")
            seen["bytes"] += len(message.get("body", b""))
            if boundary:  # each part starts with the boundary line; the closing one ends with "--"
                seen["parts"] += chunk.count(boundary + b"\r\n")
                seen["tail"] = chunk[-len(boundary) - 1 :]  # a boundary split across chunks, never one counted
            if (files is not None and seen["parts"] > files) or (size is not None and seen["bytes"] > size):
                seen["refused"] = True
                return {"type": "http.disconnect"}
            return message

        async def quiet_send(message):
            if not seen["refused"]:
                await send(message)

        try:
            await self.app(scope, counted_receive, quiet_send)
        except Exception:
            if not seen["refused"]:
                raise
        if seen["refused"]:
            await _refuse(send, too_big)
