"""A local stand-in of the ZeroGPU device API that the real `spaces` package (pinned in requirements-dev.txt) talks to
(spaces/zero/client.py and api.py are the contract): HTTP on 127.0.0.1, one card.

    POST /startup-report                 200
    POST /schedule?cgroupPath&taskId&enableQueue&tokenVersion&durationSeconds[&gpuSize][&token]
         200 {idle, nvidiaIndex, nvidiaUUID, allowToken}   the card is free; idle: the last task on it ended well, so
                                                           the package reuses its worker process for this one
         200 text/event-stream: ping..., then `succeeded` with the same JSON, or `failed` after queue_seconds
                                                           the card is busy (another task holds it)
         429 {left, wait}   wait < 0: durationSeconds over max_duration; wait = 0: the runs limit; else the quota
                            of the request's token (`token`: the visitor's x-ip-token; none: the Space's own quota)
         503                no GPU at all (no_gpu)
    POST /allow?allowToken&pid          200: the worker process now holds the card; it is killed (SIGKILL) when it
                                        outlives durationSeconds + kill_grace, as the platform does
    POST /release?allowToken&fail       200: the card is free (fail: the task ended in an error)

What the package never does itself (end a task at its duration) this server does, so a slot is really cut.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PING_SECONDS = 2.0  # between two pings of a queued request


@dataclass
class DeviceAPI:
    quota_seconds: float | None = None  # per token (None: unlimited); the Space's own quota when there is no token
    max_duration: float | None = None  # a longer durationSeconds is an illegal duration (429, wait < 0)
    no_gpu: bool = False  # 503 on /schedule
    queue_seconds: float = 60.0  # a queued request fails after this long
    kill_grace: float = 1.0
    cut_first: float | None = None  # the next task granted is killed after this many seconds, whatever it asked
    calls: list[dict] = field(default_factory=list)  # every /schedule, /allow, /release, in order
    spent: dict[str, float] = field(default_factory=dict)  # seconds of card time per token ("" = no token)

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._holder: dict | None = None  # the task holding the card
        self._waiting: list[object] = []  # queued requests, first come first served
        self._last_ok = False  # the last task on the card released without failing
        self._worker_pid: int | None = None  # the process the card was last allowed to (a reused worker's)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "DeviceAPI":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ the card
    def _grant(self, params: dict) -> dict:
        token = params.get("token", "")
        task = {
            "allowToken": uuid.uuid4().hex,
            "duration": float(params.get("durationSeconds", 60)),
            "token": token,
            "granted": time.monotonic(),
            "pid": None,
            "kill_after": float(params.get("durationSeconds", 60)) + self.kill_grace,
        }
        if self.cut_first is not None:
            task["kill_after"], self.cut_first = self.cut_first, None
        self._holder = task
        idle, self._last_ok = self._last_ok, False
        if idle and self._worker_pid:  # the package reuses its worker without a new /allow: watched from now
            task["pid"] = self._worker_pid
            threading.Thread(target=self._watch, args=(task,), daemon=True).start()
        return {"idle": idle, "nvidiaIndex": 0, "nvidiaUUID": "GPU-standin-0", "allowToken": task["allowToken"]}

    def _watch(self, task: dict) -> None:
        """The platform's kill: the worker holding the card past its duration + grace is ended."""
        deadline = task["granted"] + task["kill_after"]
        with self._lock:
            while self._holder is task and time.monotonic() < deadline:
                self._lock.wait(deadline - time.monotonic())
            if self._holder is task and task["pid"]:
                try:
                    os.kill(task["pid"], signal.SIGKILL)
                    self.calls.append({"call": "killed", "pid": task["pid"], "token": task["token"]})
                except ProcessLookupError:
                    pass

    def _release(self, allow_token: str, fail: bool) -> int:
        with self._lock:
            task = self._holder
            if task is None or task["allowToken"] != allow_token:
                return 404
            self.spent[task["token"]] = self.spent.get(task["token"], 0.0) + time.monotonic() - task["granted"]
            self._holder, self._last_ok = None, not fail
            self._lock.notify_all()
        return 200

    # ------------------------------------------------------------------ HTTP
    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body: dict | None = None) -> None:
                data = json.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path == "/startup-report":
                    api.calls.append({"call": "startup-report"})
                    return self._json(200, {})
                if url.path == "/schedule":
                    return self._schedule(params)
                if url.path == "/allow":
                    with api._lock:
                        task = api._holder
                        if task is None or task["allowToken"] != params.get("allowToken"):
                            return self._json(404, {})
                        task["pid"] = api._worker_pid = int(params["pid"])
                        api.calls.append({"call": "allow", "pid": task["pid"], "token": task["token"]})
                    threading.Thread(target=api._watch, args=(task,), daemon=True).start()
                    return self._json(200, {})
                if url.path == "/release":
                    fail = params.get("fail", "false").lower() == "true"
                    api.calls.append({"call": "release", "fail": fail})
                    return self._json(api._release(params.get("allowToken", ""), fail), {})
                return self._json(404, {})

            def _schedule(self, params: dict) -> None:
                token, seconds = params.get("token", ""), float(params.get("durationSeconds", 60))
                api.calls.append({"call": "schedule", "seconds": seconds, "token": token})
                if api.no_gpu:
                    return self._json(503, {})
                if api.max_duration is not None and seconds > api.max_duration:
                    return self._json(429, {"left": 0, "wait": -1})
                if api.quota_seconds is not None:
                    left = api.quota_seconds - api.spent.get(token, 0.0)
                    if left < seconds:
                        return self._json(429, {"left": int(max(left, 0)), "wait": 600})
                with api._lock:
                    if api._holder is None and not api._waiting:
                        return self._json(200, api._grant(params))
                    place = object()
                    api._waiting.append(place)
                # busy: an event stream, pings until the card frees for this request in its turn (succeeded) or the
                # queue gives up (failed)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                deadline, last_write = time.monotonic() + api.queue_seconds, time.monotonic()
                while True:
                    with api._lock:
                        if api._holder is None and api._waiting[0] is place:
                            api._waiting.pop(0)
                            granted = api._grant(params)
                            break
                        if time.monotonic() >= deadline:
                            api._waiting.remove(place)
                            api._lock.notify_all()
                            granted = None
                            break
                        api._lock.wait(0.5)
                    if time.monotonic() - last_write >= PING_SECONDS:  # the package reads an event per read: pings
                        self.wfile.write(b"event: ping\n\n")  # apart, so one never shares a read with the answer
                        self.wfile.flush()
                        last_write = time.monotonic()
                time.sleep(max(0.0, 0.2 - (time.monotonic() - last_write)))
                if granted is None:
                    self.wfile.write(b"event: failed\n\n")
                else:
                    self.wfile.write(f"event: succeeded\ndata: {json.dumps(granted)}\n\n".encode())
                self.wfile.flush()
                self.close_connection = True

        return Handler
