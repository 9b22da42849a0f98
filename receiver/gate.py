"""The webhook path's gate: which requests are deliveries, and what every one of them passes.

Every request to the webhook path (``<path>`` and ``<path>/<token>``, any method) is counted and
timed (receiver/metrics.py), held to ``max_concurrent_requests`` in progress (503 beyond), and
written to the access log in one line (receiver/access.py). A ``POST`` that names the route goes
straight to the endpoint: one layer, where Starlette's stack (two exception layers, the
router, the route's wrapper, and one middleware per concern, each wrapping ``send``) cost a
fifth of a request (docs/performance.md). Everything else on the path (a ``GET``: 405, a
deeper path: 404) still goes through Starlette, inside the same gate.

An endpoint that raises is answered 500 before the error goes on to the server's log, as
Starlette's ``ServerErrorMiddleware`` does.
"""

from __future__ import annotations

import time

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from receiver import answers, metrics
from receiver.access import AccessLog
from receiver.ingest import Endpoint


class Gate:
    def __init__(
        self, path: str, *, limit: int, takes_token: bool, endpoint: Endpoint, access: AccessLog
    ) -> None:
        self.path = path
        self.prefix = path.rstrip("/") + "/"
        self.takes_token = takes_token
        self.limit = limit
        self.in_flight = 0
        self.refused = 0
        self.endpoint = endpoint
        self.access = access

    def covers(self, path: str) -> bool:
        return path == self.path or path.startswith(self.prefix)

    def route(self, scope: Scope) -> dict[str, str] | None:
        """The path parameters when this request is a delivery for the endpoint, else None."""
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if path == self.path:
            return {}
        if self.takes_token:
            token = path[len(self.prefix) :]
            if token and "/" not in token:
                return {"token": token}
        return None

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """``app`` (Starlette's stack) answers what is not a delivery."""
        start = time.perf_counter()
        if self.in_flight >= self.limit:
            self.refused += 1
            response = answers.overloaded(self.limit)
            metrics.record_request(response.status_code, time.perf_counter() - start)
            await response(scope, receive, send)
            self.access.write(scope, response.status_code)
            return
        self.in_flight += 1
        try:
            params = self.route(scope)
            if params is None:
                await self._other(app, scope, receive, send, start)
            else:
                scope["path_params"] = params
                await self._delivery(scope, receive, send, start)
        finally:
            self.in_flight -= 1

    async def _delivery(self, scope: Scope, receive: Receive, send: Send, start: float) -> None:
        try:
            response = await self.endpoint.answer(scope, receive)
        except Exception:
            metrics.record_request(500, time.perf_counter() - start)
            await PlainTextResponse("Internal Server Error", 500)(scope, receive, send)
            self.access.write(scope, 500)
            raise
        if response is None:  # the client went away before its body arrived
            metrics.record_request(500, time.perf_counter() - start)
            return
        metrics.record_request(response.status_code, time.perf_counter() - start)
        await response(scope, receive, send)
        self.access.write(scope, response.status_code)

    async def _other(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, start: float
    ) -> None:
        status = 0

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                metrics.record_request(status, time.perf_counter() - start)
            await send(message)

        try:
            await self.access.around(app, scope, receive, timed)
        finally:
            if not status:  # the app raised before answering: the server answers 500
                metrics.record_request(500, time.perf_counter() - start)
