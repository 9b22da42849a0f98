"""Deliveries as Upload-Post sends them, for ``uphooks send``: the local "send test event".

Bodies use the documented fields of each event (``docs/provider-facts.md``) with
fresh identifiers per delivery; other event names get a minimal body, since the sender has
newer events than its docs page. Headers are the sender's (``delivery-facts.md``):
``X-Upload-Post-Event``, ``X-Upload-Post-Delivery`` (unique per delivery, kept on a resend),
``X-Upload-Post-Timestamp`` (unix seconds), ``User-Agent: Upload-Post-Webhooks/1.0`` and, with a
secret, ``X-Upload-Post-Signature: sha256=<hex HMAC-SHA256 over "<timestamp>." + raw body>``,
keyed with the secret string as given (``whsec_...`` included).
"""

from __future__ import annotations

import asyncio
import random
import string
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from uphooks import signatures
from uphooks.events import DOCUMENTED_EVENTS as DOCUMENTED_EVENTS  # for the CLI

USER_AGENT = "Upload-Post-Webhooks/1.0"
PLATFORMS = (
    "instagram",
    "youtube",
    "tiktok",
    "x",
    "linkedin",
    "facebook",
    "threads",
    "pinterest",
    "reddit",
    "bluesky",
    "snapchat",
    "google_business",
    "tiktok_business",
)
# The platform of each event's example in the docs.
DEFAULT_PLATFORM = {
    "upload_completed": "instagram",
    "social_account_connected": "instagram",
    "social_account_disconnected": "tiktok",
    "social_account_reauth_required": "youtube",
}
_STATUS = {
    "social_account_connected": "connected",
    "social_account_disconnected": "disconnected",
    "social_account_reauth_required": "reauth_required",
}
_REASONS = {
    "social_account_disconnected": ("manual_disconnect", "account_blocked", "max_auth_strikes"),
    "social_account_reauth_required": ("token_refresh_threshold_exceeded",),
}
_VIDEO_ONLY = {"tiktok", "tiktok_business", "youtube", "snapchat"}
_TEXT_FIRST = {"x", "linkedin", "reddit", "bluesky", "threads"}
_ERRORS = (
    "The video is longer than this account may post (max 60 s)",
    "Rate limit reached on the platform; try again later",
    "The access token has expired; the account must be reconnected",
    "Unsupported media format",
)
_CAPTIONS = (
    "Check this out! #cool",
    "Behind the scenes of this week's shoot",
    "New drop is live, link in bio",
    "Three tips we wish we knew earlier",
)


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.digits, k=n))


def _chars(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choices(alphabet, k=n))


def post_url(platform: str, profile: str, rng: random.Random) -> tuple[str, str]:
    """A plausible public URL of a published post, and the platform's id for it."""
    pid = _digits(rng, 19)
    urls = {
        "instagram": f"https://www.instagram.com/p/{_chars(rng, 11)}/",
        "youtube": f"https://www.youtube.com/watch?v={_chars(rng, 11)}",
        "tiktok": f"https://www.tiktok.com/@{profile}/video/{pid}",
        "tiktok_business": f"https://www.tiktok.com/@{profile}/video/{pid}",
        "x": f"https://x.com/{profile}/status/{pid}",
        "linkedin": f"https://www.linkedin.com/feed/update/urn:li:share:{pid}/",
        "facebook": f"https://www.facebook.com/{_digits(rng, 15)}/posts/{pid}",
        "threads": f"https://www.threads.net/@{profile}/post/{_chars(rng, 11)}",
        "pinterest": f"https://www.pinterest.com/pin/{pid[:18]}/",
        "reddit": f"https://www.reddit.com/r/{profile}/comments/{_chars(rng, 6).lower()}/",
        "bluesky": f"https://bsky.app/profile/{profile}.bsky.social/post/{_chars(rng, 13)}",
    }
    return urls.get(platform, f"https://{platform}.example/posts/{pid}"), pid


def _created_at(now: float) -> str:
    # The docs' format: ISO 8601 with microseconds and no zone.
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def build_event(
    event: str,
    platform: str,
    *,
    rng: random.Random,
    profile: str = "your_profile_username",
    email: str = "owner@example.com",
    failed: bool = False,
    job_id: bool = True,
    now: float | None = None,
) -> dict[str, Any]:
    """One realistic payload of ``event`` on ``platform``, with fresh identifiers."""
    now = time.time() if now is None else now
    if event == "upload_completed":
        media = (
            "video"
            if platform in _VIDEO_ONLY
            else "text"
            if platform in _TEXT_FIRST
            else rng.choice(("photo", "video"))
        )
        url, post_id = post_url(platform, profile, rng)
        body: dict[str, Any] = {"event": event}
        if job_id:
            body["job_id"] = uuid.UUID(int=rng.getrandbits(128)).hex
        body |= {
            "user_email": email,
            "profile_username": profile,
            "platform": platform,
            "media_type": media,
            "title": f"Post {_chars(rng, 6)}",
            "caption": rng.choice(_CAPTIONS),
            "result": (
                {
                    "success": False,
                    "url": None,
                    "publish_id": None,
                    "post_id": None,
                    "error": rng.choice(_ERRORS),
                }
                if failed
                else {
                    "success": True,
                    "url": url,
                    "publish_id": post_id,
                    "post_id": post_id,
                    "error": None,
                }
            ),
            "created_at": _created_at(now),
        }
        return body
    if event in _STATUS:
        account = (
            "UC" + _chars(rng, 22) if platform == "youtube" else f"{profile}_{platform}".lower()
        )
        body = {
            "event": event,
            "user_email": email,
            "platform": platform,
            "account_name": account,
            "status": _STATUS[event],
        }
        # As in the docs' examples: reauth_required names no profile.
        if event != "social_account_reauth_required":
            body["profile_username"] = profile
        if event in _REASONS:
            body["reason"] = rng.choice(_REASONS[event])
        body["created_at"] = _created_at(now)
        return body
    # Newer events than the docs page: only the fields every event has.
    return {
        "event": event,
        "user_email": email,
        "profile_username": profile,
        "platform": platform,
        "created_at": _created_at(now),
    }


def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    return signatures.upload_post_signature(secret, timestamp, body)


def headers_for(
    event: str,
    body: bytes,
    *,
    secret: str | None,
    timestamp: int,
    delivery_id: str,
) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Upload-Post-Event": event,
        "X-Upload-Post-Delivery": delivery_id,
        "X-Upload-Post-Timestamp": str(timestamp),
    }
    if secret:
        headers["X-Upload-Post-Signature"] = signature(secret, timestamp, body)
    return headers


@dataclass(frozen=True)
class Prepared:
    event: str
    body: bytes
    headers: dict[str, str]


def prepare(
    event: str | None,
    count: int,
    *,
    platforms: Sequence[str] = (),
    secret: str | None = None,
    age_seconds: float = 0,
    repeat: int = 1,
    body: bytes | None = None,
    seed: int | None = None,
    **fields: Any,
) -> list[Prepared]:
    """``count`` deliveries (each posted ``repeat`` times, as the sender's retries are).

    With ``body`` every delivery posts those exact bytes (its own delivery id each).
    """
    rng = random.Random(seed)
    now = time.time()
    timestamp = int(now - age_seconds)
    out: list[Prepared] = []
    for i in range(count):
        if body is not None:
            raw = body
            name = event or str(orjson.loads(body).get("event") or "")
        else:
            assert event is not None
            chosen = platforms[i % len(platforms)] if platforms else DEFAULT_PLATFORM.get(event)
            # Each event its own created_at (to the microsecond, as the sender's): the receiver
            # takes two account events with equal fields and time for one fact.
            created = now - (count - 1 - i) / 1000
            payload = build_event(event, chosen or "instagram", rng=rng, now=created, **fields)
            raw = orjson.dumps(payload)
            name = event
        delivery_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        headers = headers_for(
            name, raw, secret=secret, timestamp=timestamp, delivery_id=delivery_id
        )
        out.extend(Prepared(name, raw, headers) for _ in range(repeat))
    return out


@dataclass(frozen=True)
class Result:
    status: int | None
    error: str | None
    seconds: float
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def _post_all(
    url: str,
    prepared: Sequence[Prepared],
    concurrency: int,
    request_timeout: float,
    on_done: Callable[[Result], None],
) -> list[Result]:
    results: list[Result] = []
    queue: asyncio.Queue[Prepared] = asyncio.Queue()
    for item in prepared:
        queue.put_nowait(item)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            start = time.perf_counter()
            try:
                response = await client.post(url, content=item.body, headers=item.headers)
                result = Result(
                    response.status_code, None, time.perf_counter() - start, response.text[:2000]
                )
            except httpx.HTTPError as exc:
                result = Result(None, type(exc).__name__, time.perf_counter() - start, str(exc))
            results.append(result)
            on_done(result)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=request_timeout, limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(max(1, concurrency))))
    return results


def send(
    url: str,
    prepared: Sequence[Prepared],
    *,
    concurrency: int = 4,
    timeout: float = 15.0,
    on_done: Callable[[Result], None] = lambda _: None,
) -> list[Result]:
    """Post every delivery, ``concurrency`` at a time; never raises for an HTTP failure."""
    return asyncio.run(_post_all(url, prepared, concurrency, timeout, on_done))


def summarize(results: Sequence[Result], elapsed: float) -> dict[str, Any]:
    statuses = Counter(str(r.status) for r in results if r.status is not None)
    errors = Counter(r.error for r in results if r.error)
    times = sorted(r.seconds for r in results)

    def pct(p: float) -> float:
        return round(1000 * times[min(len(times) - 1, int(p * len(times)))], 2) if times else 0.0

    return {
        "sent": len(results),
        "ok": all(r.ok for r in results) and bool(results),
        "statuses": dict(sorted(statuses.items())),
        "errors": dict(sorted(errors.items())),
        "seconds": round(elapsed, 3),
        "per_second": round(len(results) / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "max": pct(1.0)},
    }
