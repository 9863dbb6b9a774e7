"""A crowded page beside a run training on the CPU: while the app serves many requests at once, BusyMark touches
$SFT_SPACE_HOME/serving, and the training process trains on one thread less while that mark is fresh
(callbacks.RunDirCallback._share_the_cpu), so twenty visitors' requests are not answered from half a core. One page
polling its run never reaches the threshold: only a crowd takes a thread from training."""

from __future__ import annotations

import contextlib
import time

from .. import SERVING_MARK, home
from ..runs import liveness

BUSY_REQUESTS = 8  # HTTP requests in flight at once that make the page "busy"
# long-lived streams every open page holds (heartbeat, event streams) and uploads: waiting, not work
NOT_WORK = ("/heartbeat/", "/queue/data", "/upload", "/dev/reload")
TOUCH_EVERY_SECONDS = 1.0


class BusyMark:
    def __init__(self, app) -> None:
        self.app = app
        self.in_flight = 0
        self.touched = 0.0

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or any(part in path for part in NOT_WORK)
            or "/call/" in path
            and (scope.get("method") == "GET")
        ):  # an event's result stream (GET .../call/<api>/<event>) waits for work counted by its POST
            return await self.app(scope, receive, send)
        self.in_flight += 1
        try:
            now = time.time()
            if self.in_flight >= BUSY_REQUESTS and now - self.touched > TOUCH_EVERY_SECONDS:
                self.touched = now
                if liveness.generation_threads() == 1:  # a run this app started trains on the CPU
                    with contextlib.suppress(OSError):
                        (home() / SERVING_MARK).touch()
            return await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
