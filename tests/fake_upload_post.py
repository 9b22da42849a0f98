"""A fake of Upload-Post's read-back API (../shared/upload-post-api.md) on 127.0.0.1, in a thread.

It keeps a history (newest first, paginated as documented: ``page >= 1``, ``limit`` in 10, 20,
50, 100, else 400), answers status by request_id/job_id, retry (200, 404 unknown id, 409 nothing
failed) and the profiles. It refuses any key but its own with the documented 401 body, records
every request, and can be told to answer a path with something else first (``script``):
429 with Retry-After, 500, a slow answer.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.plugins.servers import LocalHTTPServer

KEY = "upk_test_5ecret_key_0123456789"


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any
    at: float = field(default_factory=time.monotonic)  # when it arrived (for backoff checks)

    @property
    def line(self) -> str:
        q = "&".join(f"{k}={v}" for k, v in sorted(self.query.items()))
        return f"{self.method} {self.path}" + (f"?{q}" if q else "")


class FakeUploadPost(LocalHTTPServer):
    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []  # newest first
        self.statuses: dict[str, list[dict[str, Any]]] = {}  # id -> answers in turn (last stays)
        self.retryable: dict[str, int] = {}  # id -> failed platforms left to retry
        self.profiles: list[dict[str, Any]] = []
        self.script: dict[str, deque[Reply]] = defaultdict(deque)  # path -> replies first
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        super().__init__(self._handler())

    def lines(self) -> list[str]:
        with self._lock:
            return [r.line for r in self.requests]

    def seen(self, method: str, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == method and r.path == path]

    # -- the API ---------------------------------------------------------------------------
    def _answer(self, req: Request) -> Reply:
        scheme, _, key = req.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "apikey" or key != KEY:
            return Reply(401, {"success": False, "message": "Invalid or expired token"})
        with self._lock:
            scripted = self.script.get(req.path)
            if scripted:
                return scripted.popleft()
        if req.method == "GET" and req.path == "/api/uploadposts/history":
            return self._history(req.query)
        if req.method == "GET" and req.path == "/api/uploadposts/status":
            ident = req.query.get("request_id") or req.query.get("job_id")
            if not ident:
                return Reply(400, {"error": "request_id or job_id is required"})
            answers = self.statuses.get(ident)
            if not answers:
                return Reply(404, {"status": "not_found"})
            return Reply(200, answers.pop(0) if len(answers) > 1 else answers[0])
        if req.method == "POST" and req.path == "/api/uploadposts/posts/retry":
            body = req.body if isinstance(req.body, dict) else {}
            ident = body.get("request_id") or body.get("job_id")
            if not ident:
                return Reply(400, {"error": "request_id or job_id is required"})
            if ident not in self.retryable:
                return Reply(404, {"success": False, "message": "upload not found"})
            if self.retryable[ident] == 0:
                return Reply(409, {"success": False, "message": "nothing to retry"})
            self.retryable[ident] = 0
            return Reply(200, {"success": True, "request_id": ident, "message": "re-enqueued"})
        if req.method == "GET" and req.path == "/api/uploadposts/users":
            return Reply(200, {"profiles": self.profiles, "limit": 10, "plan": "basic"})
        return Reply(404, {"error": "no such endpoint"})

    def _history(self, query: dict[str, str]) -> Reply:
        try:
            page = int(query.get("page", "1"))
        except ValueError:
            page = 0
        if page < 1:
            return Reply(400, {"error": "Invalid page"})
        limit = int(query.get("limit", "10")) if query.get("limit", "10").isdigit() else 0
        if limit not in (10, 20, 50, 100):
            return Reply(400, {"error": "Invalid limit"})
        items = self.history[(page - 1) * limit : page * limit]
        return Reply(
            200, {"history": items, "total": len(self.history), "page": page, "limit": limit}
        )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                req = Request(
                    method,
                    parts.path,
                    {k: v[-1] for k, v in parse_qs(parts.query).items()},
                    {k.lower(): v for k, v in self.headers.items()},
                    json.loads(raw) if raw else None,
                )
                with fake._lock:
                    fake.requests.append(req)
                reply = fake._answer(req)
                if reply.delay:
                    time.sleep(reply.delay)
                data = json.dumps(reply.body).encode() if reply.body is not None else b""
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def history_item(
    platform: str,
    *,
    success: bool,
    at: str,
    request_id: str | None = None,
    post_id: str | list[str] | None = None,
    profile: str = "your_profile_username",
    error: str | None = None,
    title: str = "My Awesome Video",
) -> dict[str, Any]:
    """One history item with the documented field names."""
    item: dict[str, Any] = {
        "user_email": "owner@example.com",
        "profile_username": profile,
        "platform": platform,
        "media_type": "video",
        "upload_timestamp": at,
        "success": success,
        "platform_post_id": post_id if success else None,
        "post_url": f"https://{platform}.example/p/{post_id}" if success else None,
        "error_message": None if success else (error or "upload failed"),
        "media_size_bytes": 1234,
        "post_title": title,
        "post_caption": "Check this out! #cool",
        "is_async": True,
        "dashboard": {"ignored": True},
    }
    if request_id is not None:
        item["request_id"] = request_id
        item["request_total_platforms"] = 2
    return item
