"""bench/console.py's retained deliveries: kept through the real ingress script
(``receiver.enqueue.Enqueuer`` running ``receiver/enqueue.lua``, with the terms the ingress
computes) and moved through the real ledger scripts (``admit.lua``, ``claim.lua``, ``settle.lua``)
into a realistic mix: four event names, twelve platforms, 2,000 profiles (a few large, most
small), two handlers per event; 93 % done, 3 % pending (some never routed), 1 % running, 2 %
retrying (attempt histories), 1 % dead."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from receiver.enqueue import Enqueuer
from uphooks import indexes
from uphooks.settings import Settings
from workers.deadletter import DeadLetter
from workers.ledger import Ledger, Route, Settlement

PREFIX = "bc"
EVENTS = (
    ("upload_completed", 70),
    ("social_account_connected", 10),
    ("social_account_disconnected", 10),
    ("social_account_reauth_required", 10),
)
PLATFORMS = (
    ("instagram", 25), ("tiktok", 25), ("youtube", 15), ("x", 10), ("facebook", 8),
    ("linkedin", 5), ("threads", 4), ("pinterest", 3), ("reddit", 2), ("bluesky", 1),
    ("snapchat", 1), ("google_business", 1),
)  # fmt: skip
PROFILES = 2000
HANDLERS = {"upload_completed": ("app.store", "app.notify")}
OTHER_HANDLERS = ("app.store", "app.accounts")
# Final state of a delivery's pairs: one pair of the delivery takes it, the other is done.
MIX = (("done", 93), ("pending", 3), ("running", 1), ("retrying", 2), ("dead", 1))
CHUNK = 5000


_CUMULATIVE: dict[int, tuple[list[str], list[int]]] = {}


def pick(rnd: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    found = _CUMULATIVE.get(id(weighted))
    if found is None:
        total, cum = 0, []
        for _, w in weighted:
            total += w
            cum.append(total)
        found = _CUMULATIVE[id(weighted)] = ([v for v, _ in weighted], cum)
    return rnd.choices(found[0], cum_weights=found[1])[0]


def payload(rnd: random.Random, i: int) -> dict[str, Any]:
    event = pick(rnd, EVENTS)
    profile = f"profile-{min(int(rnd.paretovariate(1.1)), PROFILES) - 1:04d}"
    body: dict[str, Any] = {
        "event": event,
        "user_email": f"user{i % 997}@example.com",
        "profile_username": profile,
        "platform": pick(rnd, PLATFORMS),
        "created_at": "2026-12-01T14:30:00.000000",
    }
    if event == "upload_completed":
        post = f"{17_000_000_000 + i}"
        body |= {
            "job_id": f"job-{i // 3:08d}",
            "media_type": "video",
            "title": "My Awesome Video",
            "caption": "Check this out! #cool",
            "result": {"success": True, "url": f"https://example.com/p/{post}", "post_id": post},
        }
    else:
        body |= {"account_name": f"acct_{i % 5000}", "status": event.rsplit("_", 1)[-1]}
    return body


def record(body: dict[str, Any]) -> bytes:
    text = orjson.dumps(body).decode()
    headers = {"x-upload-post-delivery": "d", "x-upload-post-timestamp": str(int(time.time()))}
    return orjson.dumps(
        {"event": body["event"], "received_at": time.time(), "headers": headers, "body": text}
    )


async def enqueue(settings: Settings, items: list[tuple[str, dict[str, Any]]]) -> None:
    client = aioredis.Redis.from_url(settings.redis_url)
    enqueuer = Enqueuer(client, settings)
    await enqueuer.start()
    try:
        await asyncio.gather(
            *(
                enqueuer.submit(key, record(b), b"", indexes.receipt_terms(b["event"], b))
                for key, b in items
            )
        )
    finally:
        await enqueuer.stop()
        await client.aclose()


def move(
    ledger: Ledger,
    items: list[tuple[str, dict[str, Any]]],
    rnd: random.Random,
    mix: tuple[tuple[str, int], ...] = MIX,
) -> None:
    """Route every delivery (but a few) and drive its pairs to the mix through the scripts."""
    routes, claims, settles = [], [], []
    now = time.time()
    for key, body in items:
        state = pick(rnd, mix)
        if state == "pending" and rnd.random() < 0.5:
            continue  # never routed
        names = HANDLERS.get(body["event"], OTHER_HANDLERS)
        routes.append((key, [Route(h, None, False) for h in names]))
        for n, h in enumerate(names):
            target = state if n == len(names) - 1 else "done"
            if target == "pending":
                continue
            claims.append((key, h, "1.1"))
            if target == "running":
                continue
            kind = {"done": "done", "retrying": "retry", "dead": "dead"}[target]
            details: dict[str, Any] = {"attempt": 1, "at": now, "outcome": kind, "duration": 0.01}
            extra: bytes | float | str = ""
            if kind != "done":
                details |= {"error": "TransientError('HTTP 503')", "traceback": "Traceback ..."}
            if kind == "retry":
                details["next_at"] = extra = now + 3600
            elif kind == "dead":
                letter = DeadLetter(
                    key=key,
                    handler=h,
                    event=body["event"],
                    attempts=1,
                    error=details["error"],
                    traceback=details["traceback"],
                    first_received_at=now,
                    dead_at=now,
                    record=record(body).decode(),
                )
                extra = orjson.dumps(asdict(letter))
            settles.append(Settlement((key, h, "1.1"), kind, orjson.dumps(details), extra))
    for start in range(0, len(routes), 1000):
        ledger.admit(routes[start : start + 1000], "bench")
    for start in range(0, len(claims), 1000):
        ledger.claim(claims[start : start + 1000], "bench")
    for start in range(0, len(settles), 1000):
        ledger.settle(settles[start : start + 1000], "bench")


def fill(
    settings: Settings,
    client: redis.Redis,
    n: int,
    seed: int = 7,
    mix: tuple[tuple[str, int], ...] = MIX,
) -> float:
    rnd = random.Random(seed)
    ledger = Ledger(client, settings)
    started = time.monotonic()
    for start in range(0, n, CHUNK):
        items = [(f"e:{i:012x}", payload(rnd, i)) for i in range(start, min(n, start + CHUNK))]
        asyncio.run(enqueue(settings, items))
        move(ledger, items, rnd, mix)
        if start // CHUNK % 40 == 0:
            print(f"  {start + len(items):,} kept ({time.monotonic() - started:.0f} s)", flush=True)
    return time.monotonic() - started
