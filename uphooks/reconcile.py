"""One reconciliation pass: what Upload-Post's history knows and no webhook told us, injected.

The pass reads the upload history newest first, back to the last checkpoint minus an overlap
(or ``since``), skips results younger than the grace period (their webhook may still come), and
for every result whose facts (uphooks/facts.py) no kept delivery reports, injects an
``upload_completed`` built from it through the ingress's store-and-enqueue path
(receiver/inject.py, handed in by the caller), marked ``reconciled``. The check is made again
inside the enqueue script, atomically, so two passes, or a pass and a webhook, never keep the
same fact twice.

The checkpoint (``<prefix>:reconcile:checkpoint``, unix seconds) moves only after a complete
pass: one cut short by its request budget or by the API starts from the same point next time.
docs/reconciliation.md has the reasoning and the limits.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from uphooks import facts, metrics
from uphooks.keys import Keys
from uphooks.provider_api import ProviderAPIError
from uphooks.readback import ReadBack
from uphooks.settings import Settings

log = logging.getLogger("uphooks.reconcile")

#: Facts are kept as long as deliveries; a pass never reads back further than this before
#: their end, or a fact already delivered could have been forgotten.
FACT_MARGIN_SECONDS = 3600


class Injected(Protocol):
    """What injecting one payload came to (receiver/inject.py's ``Injected``)."""

    @property
    def key(self) -> str: ...

    @property
    def kept(self) -> bool: ...


#: How a pass injects: the ingress's store-and-enqueue path, ``receiver.inject.inject``, given
#: by the caller (the workers' job, the CLI) so that this shared module imports no receiver.
Inject = Callable[[Settings, Sequence[Mapping[str, Any]]], Sequence[Injected]]


def checkpoint_key(prefix: str) -> str:
    return f"{prefix}:reconcile:checkpoint"


def to_webhook(item: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``upload_completed`` a history item (or status result) stands for; None when the
    item lacks what the event needs (a platform, an outcome, a time)."""
    platform, success = item.get("platform"), item.get("success")
    at = facts.timestamp(item.get("upload_timestamp"))
    if not isinstance(platform, str) or not platform or not isinstance(success, bool) or at is None:
        return None
    ids = item.get("platform_post_id")
    first = ids[0] if isinstance(ids, list) and ids else ids
    post_id = str(first) if isinstance(first, str | int) and success else None
    request_id = item.get("request_id") or item.get("job_id")
    payload: dict[str, Any] = {
        "event": "upload_completed",
        "user_email": str(item.get("user_email") or ""),
        "profile_username": item.get("profile_username"),
        "platform": platform,
        "media_type": item.get("media_type"),
        "title": item.get("post_title"),
        "caption": item.get("post_caption"),
        "result": {
            "success": success,
            "url": item.get("post_url") if success else None,
            "publish_id": post_id,
            "post_id": post_id,
            "error": None
            if success
            else str(item.get("error_message") or item.get("message") or ""),
        },
        "created_at": item.get("upload_timestamp"),
    }
    if isinstance(request_id, str) and request_id:
        payload["job_id"] = request_id
        payload["request_id"] = request_id
    if isinstance(ids, list) and len(ids) > 1:
        payload["result"]["post_ids"] = [str(i) for i in ids]  # every id, for the facts
    return payload


@dataclass
class Found:
    """One history result the pass looked at closely (inside its time range)."""

    payload: dict[str, Any]
    known: bool
    key: str | None = None  # the injected delivery's key

    def describe(self) -> str:
        result = self.payload["result"]
        outcome = "ok" if result["success"] else f"failed: {result['error']}"
        ident = self.payload.get("request_id") or result.get("post_id") or "-"
        return (
            f"{self.payload['created_at']}  {self.payload['platform']}  "
            f"{self.payload.get('profile_username') or '-'}  {ident}  {outcome}"
        )


@dataclass
class PassResult:
    since: float
    until: float
    looked_at: int = 0
    too_recent: int = 0
    unusable: int = 0
    found: list[Found] = field(default_factory=list)
    injected: int = 0
    already: int = 0
    requests: int = 0
    complete: bool = True
    stopped: str = ""  # why the pass ended early
    checkpoint: float | None = None

    @property
    def missing(self) -> list[Found]:
        return [f for f in self.found if not f.known]

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "looked_at": self.looked_at,
            "too_recent": self.too_recent,
            "unusable": self.unusable,
            "in_range": len(self.found),
            "missing": [f.payload for f in self.missing],
            "injected": self.injected,
            "already_known": self.already,
            "requests": self.requests,
            "complete": self.complete,
            "stopped": self.stopped,
            "checkpoint": self.checkpoint,
        }


class Reconciler:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        inject: Inject,
    ) -> None:
        self._r = client
        self._s = settings
        self._keys = Keys(settings.key_prefix)
        self._inject = inject

    def known(self, payloads: Iterable[Mapping[str, Any]]) -> list[bool]:
        """Whether some kept delivery already reports each payload's fact."""
        looks = [facts.webhook_facts(p).looks for p in payloads]
        flat = [facts.fact_key(self._s.key_prefix, n) for names in looks for n in names]
        values = self._r.mget(flat) if flat else []
        out, at = [], 0
        for names in looks:
            out.append(any(v is not None for v in values[at : at + len(names)]))
            at += len(names)
        return out

    def inject(self, payloads: Sequence[dict[str, Any]]) -> list[Found]:
        """Inject what is not known yet; the enqueue script checks again, atomically."""
        known = self.known(payloads)
        found = [Found(p, k) for p, k in zip(payloads, known, strict=True)]
        fresh = [f for f in found if not f.known]
        if fresh:
            results = self._inject(self._s, [f.payload for f in fresh])
            for f, result in zip(fresh, results, strict=True):
                f.key = result.key
                f.known = not result.kept
        kept = [f for f in fresh if not f.known]
        if kept:
            metrics.reconciled("upload_completed", len(kept))
            log.warning(
                "injected %d upload result(s) no webhook told us about (marked reconciled): %s",
                len(kept),
                ", ".join(str(f.key) for f in kept[:10]),
            )
        return found

    def checkpoint(self) -> float | None:
        raw = self._r.get(checkpoint_key(self._s.key_prefix))
        return float(raw) if raw else None

    def run(
        self,
        api: ReadBack,
        *,
        since: float | None = None,
        dry_run: bool = False,
        now: float | None = None,
    ) -> PassResult:
        """One pass. ``since`` overrides the checkpoint (and then the checkpoint stays)."""
        now = time.time() if now is None else now
        s = self._s
        until = now - s.reconcile_grace_seconds
        if since is None:
            mark = self.checkpoint()
            start = (
                mark - s.reconcile_overlap_seconds
                if mark is not None
                else now - s.reconcile_first_lookback_seconds
            )
        else:
            start = since
        oldest = now - s.dedup_ttl_seconds + FACT_MARGIN_SECONDS
        if start < oldest:
            log.warning(
                "reconciling from %.0f s ago only: facts are kept for UPHOOKS_DEDUP_TTL_SECONDS, "
                "so an older result could not be told from one already delivered",
                now - oldest,
            )
            start = oldest
        result = PassResult(since=start, until=until)
        payloads: list[dict[str, Any]] = []
        try:
            for item in api.history():
                result.looked_at += 1
                at = facts.timestamp(item.get("upload_timestamp"))
                if at is not None and at < start:
                    break  # newest first: the rest is older
                if at is not None and at > until:
                    result.too_recent += 1
                    continue
                payload = to_webhook(item)
                if payload is None:
                    result.unusable += 1
                    continue
                payloads.append(payload)
        except ProviderAPIError as exc:
            result.complete = False
            result.stopped = str(exc)
            if exc.status in (401, 403):
                raise
        finally:
            result.requests = api.used
        if dry_run:
            result.found = [
                Found(p, k) for p, k in zip(payloads, self.known(payloads), strict=True)
            ]
        else:
            result.found = self.inject(payloads)
        result.injected = sum(1 for f in result.found if f.key and not f.known)
        result.already = sum(1 for f in result.found if f.known)
        if result.complete and not dry_run and since is None:
            previous = self.checkpoint() or 0.0
            result.checkpoint = max(previous, until)
            self._r.set(checkpoint_key(s.key_prefix), result.checkpoint)
        metrics.reconcile_pass("complete" if result.complete else "cut_short")
        return result
