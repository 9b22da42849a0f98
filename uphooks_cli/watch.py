"""``uphooks watch``: follow one upload through the status endpoint until it is finished.

Polls ``GET /api/uploadposts/status`` with a growing delay (1 s doubling up to 30 s) until a
terminal status (completed, failed, not_found) or the deadline, and reports each platform's
result as it appears. Its results can be injected like history items (uphooks/reconcile.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from uphooks.readback import TERMINAL, ReadBack


@dataclass
class Progress:
    status: str
    completed: int | None
    total: int | None
    results: list[dict[str, Any]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    def lines(self) -> list[str]:
        if self.status == "not_found":
            which = "request_id" if self.raw.get("request_id") else "job_id"
            return [
                f"not found: Upload-Post knows no upload with {which} {self.raw.get(which)}; "
                "check the id and that UPHOOKS_UPLOAD_POST_API_KEY is the uploading account's"
            ]
        done = f"{self.completed if self.completed is not None else '?'}/{self.total or '?'}"
        rows = [f"status: {self.status} ({done} platforms)"]
        for r in self.results:
            outcome = "ok" if r.get("success") else f"failed: {r.get('message') or r.get('error')}"
            rows.append(f"    {r.get('platform') or '?'}: {outcome}")
        return rows


def _progress(data: dict[str, Any]) -> Progress:
    results = data.get("results")
    completed, total = data.get("completed"), data.get("total")
    return Progress(
        status=str(data.get("status") or "unknown"),
        completed=completed if isinstance(completed, int) else None,
        total=total if isinstance(total, int) else None,
        results=[r for r in results if isinstance(r, dict)] if isinstance(results, list) else [],
        raw=data,
    )


def follow(
    api: ReadBack,
    *,
    request_id: str | None = None,
    job_id: str | None = None,
    timeout: float = 3600,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Progress]:
    """Each answer that differs from the one before, until a terminal status or ``timeout``."""
    deadline = time.monotonic() + timeout
    delay, last = first_delay, None
    while True:
        progress = _progress(api.status(request_id=request_id, job_id=job_id))
        seen = (progress.status, progress.completed, len(progress.results))
        if seen != last:
            yield progress
            last = seen
        if progress.finished or time.monotonic() + delay > deadline:
            return
        sleep(delay)
        delay = min(max_delay, delay * 2)


def as_history_items(progress: Progress) -> list[dict[str, Any]]:
    """The status results as history items (their field names), for injection."""
    top = progress.raw
    items = []
    for r in progress.results:
        item = dict(r)
        item.setdefault("request_id", top.get("request_id") or top.get("job_id"))
        item.setdefault("error_message", r.get("message") if not r.get("success") else None)
        item.setdefault("platform_post_id", r.get("platform_post_id") or r.get("post_id"))
        items.append(item)
    return items
