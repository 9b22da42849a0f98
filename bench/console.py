"""``make bench-console``: the console's list and event pages with 1,000,000 retained deliveries.

A private Redis (no persistence). ``--n`` deliveries are kept through the real ingress script
(``receiver.enqueue.Enqueuer`` running ``receiver/enqueue.lua``, with the terms the ingress
computes) and moved through the real ledger scripts (``admit.lua``, ``claim.lua``,
``settle.lua``) into a realistic mix: four event names, twelve platforms, 2,000 profiles (a few
large, most small), two handlers per event; 93 % done, 3 % pending (some never routed), 1 %
running, 2 % retrying (attempt histories), 1 % dead. Then, for a set of filter combinations,
``ConsoleStore.list_events`` is timed on its first page and on pages deep down the cursor, and
``ConsoleStore.event`` on random deliveries; p50/p95 in milliseconds, with ``uptime``.

Two smaller measurements in the same run, each against its own baseline measured right beside
it: what the indexes add per delivery to the ingress script and to ``admit.lua`` (the same
scripts with the index lines taken out), and the bytes per retained delivery they add
(``used_memory`` for 100,000 deliveries with and without them). Not a test: figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from console.store import ConsoleStore, EventQuery
from receiver.enqueue import Enqueuer
from uphooks import indexes
from uphooks.indexes import lookup_bucket_seconds
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer
from workers.ledger import Ledger, Route, Settlement, script_source

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


def move(ledger: Ledger, items: list[tuple[str, dict[str, Any]]], rnd: random.Random) -> None:
    """Route every delivery (but a few) and drive its pairs to the mix through the scripts."""
    routes, claims, settles = [], [], []
    now = time.time()
    for key, body in items:
        state = pick(rnd, MIX)
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
                extra = orjson.dumps({"key": key, "handler": h, "record": "{}"})
            settles.append(Settlement((key, h, "1.1"), kind, orjson.dumps(details), extra))
    for start in range(0, len(routes), 1000):
        ledger.admit(routes[start : start + 1000], "bench")
    for start in range(0, len(claims), 1000):
        ledger.claim(claims[start : start + 1000], "bench")
    for start in range(0, len(settles), 1000):
        ledger.settle(settles[start : start + 1000], "bench")


def fill(settings: Settings, client: redis.Redis, n: int, seed: int = 7) -> float:
    rnd = random.Random(seed)
    ledger = Ledger(client, settings)
    started = time.monotonic()
    for start in range(0, n, CHUNK):
        items = [(f"e:{i:012x}", payload(rnd, i)) for i in range(start, min(n, start + CHUNK))]
        asyncio.run(enqueue(settings, items))
        move(ledger, items, rnd)
        if start // CHUNK % 40 == 0:
            print(f"  {start + len(items):,} kept ({time.monotonic() - started:.0f} s)", flush=True)
    return time.monotonic() - started


def timed(call: Callable[[], object], repeat: int) -> dict[str, float]:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        runs.append((time.perf_counter() - t) * 1000)
    runs.sort()
    return {
        "p50_ms": round(statistics.median(runs), 2),
        "p95_ms": round(runs[max(0, int(len(runs) * 0.95) - 1)], 2),
        "max_ms": round(runs[-1], 2),
    }


def deep_cursor(store: ConsoleStore, q: EventQuery, pages: int) -> str | None:
    cursor = None
    for _ in range(pages):
        cursor = store.list_events(EventQuery(**{**q.__dict__, "cursor": cursor})).next_cursor
        if cursor is None:
            break
    return cursor


def queries(client: redis.Redis) -> dict[str, EventQuery]:
    newest = float(client.zrevrange(f"{PREFIX}:events", 0, 0, withscores=True)[0][1])
    oldest = float(client.zrange(f"{PREFIX}:events", 0, 0, withscores=True)[0][1])
    middle = oldest + (newest - oldest) / 2
    return {
        "no filter": EventQuery(),
        "state=dead": EventQuery(state="dead"),
        "state=retrying": EventQuery(state="retrying"),
        "state=done": EventQuery(state="done"),
        "event=social_account_disconnected": EventQuery(event="social_account_disconnected"),
        "platform=tiktok": EventQuery(platform="tiktok"),
        "profile=profile-0040 (small)": EventQuery(profile="profile-0040"),
        "handler=app.notify": EventQuery(handler="app.notify"),
        "handler=app.notify+state=dead": EventQuery(handler="app.notify", state="dead"),
        "platform=bluesky+state=retrying": EventQuery(platform="bluesky", state="retrying"),
        "event+platform+profile": EventQuery(
            event="upload_completed", platform="instagram", profile="profile-0000"
        ),
        "state=dead+profile=profile-0003": EventQuery(state="dead", profile="profile-0003"),
        "time window (10 %)": EventQuery(since=middle, until=middle + (newest - oldest) / 10),
        "state=done+time window": EventQuery(
            state="done", since=middle, until=middle + (newest - oldest) / 10
        ),
    }


def measure(store: ConsoleStore, client: redis.Redis, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"list_events": {}, "event": {}}
    for name, q in queries(client).items():
        first = store.list_events(q)
        deep = deep_cursor(store, q, 20)
        row: dict[str, Any] = {"rows": len(first.rows), "scanned": first.scanned}
        row["page 1"] = timed(lambda q=q: store.list_events(q), repeat)  # type: ignore[misc]
        if deep is not None:
            dq = EventQuery(**{**q.__dict__, "cursor": deep})
            row["page 21"] = timed(lambda dq=dq: store.list_events(dq), repeat)  # type: ignore[misc]
        out["list_events"][name] = row
        print(f"  {name}: {row}", flush=True)
    total = int(client.zcard(f"{PREFIX}:events"))
    rnd = random.Random(3)
    picks = [_first(client.zrange(f"{PREFIX}:events", i, i)) for i in rnd.sample(range(total), 200)]
    it = iter(picks * (repeat // len(picks) + 1))
    out["event"]["random delivery"] = timed(lambda: store.event(next(it)), repeat)
    dead = store.list_events(EventQuery(state="retrying", limit=200)).rows
    it2 = iter([r.key for r in dead] * (repeat // max(1, len(dead)) + 1))
    out["event"]["retrying (with history)"] = timed(lambda: store.event(next(it2)), repeat)
    out["lookup job_id"] = timed(
        lambda: store.lookup(f"job-{rnd.randrange(total // 3):08d}"), repeat
    )
    out["counts"] = timed(store.counts, repeat)
    out["estimate state=dead+platform=tiktok"] = timed(
        lambda: store.estimate(EventQuery(state="dead", platform="tiktok")), 20
    )
    print(f"  event/lookup/counts: { {k: v for k, v in out.items() if k != 'list_events'} }")
    return out


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU Redis's main thread has used: unlike wall time, not inflated when the
    machine is busy and Redis waits for a core."""
    cpu: dict[str, float] = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def script_costs(client: redis.Redis, settings: Settings, rounds: int = 5) -> dict[str, Any]:
    """Redis CPU µs per delivery of enqueue.lua and admit.lua with the index lines and without
    (the same scripts with them taken out), interleaved, the mean of ``rounds`` batches of 2,000;
    and the CPU µs the ingress process spends computing a delivery's terms."""
    lua = Path(sys.modules["receiver.enqueue"].__file__ or "").with_name("enqueue.lua").read_text()
    plain_enqueue = client.register_script(lua)
    admit_ix = client.register_script(script_source("admit.lua"))
    admit_plain = client.register_script(
        script_source("admit.lua").replace("if flags[1] ~= -1 then ix_sync(prefix, key) end", "")
    )
    rnd = random.Random(5)
    bodies = [payload(rnd, i) for i in range(2000)]
    spent: dict[str, float] = {}
    for r in range(rounds):
        for variant in ("with indexes", "without"):
            keys = [f"sc:{variant[:4]}{r}:{i}" for i in range(len(bodies))]
            recs = [record(b) for b in bodies]
            terms = [indexes.receipt_terms(b["event"], b) for b in bodies]
            lengths = ",".join(str(len(x)) for x in recs)
            cut = len(f"{PREFIX}:delivery:")
            args: list[Any] = [3600, time.time(), "[", "]", "{}", cut, lengths, b"".join(recs)]
            args += [600, "f:", "", ""]
            if variant == "with indexes":
                lens = ",".join(str(len(t)) for t in terms)
                args += [f"{PREFIX}:ix:", lens, b"".join(terms), lookup_bucket_seconds(3600)]
            k = [
                "sc:q",
                f"{PREFIX}:events",
                f"{PREFIX}:due",
                *[f"{PREFIX}:delivery:{x}" for x in keys],
            ]
            t = redis_cpu(client)
            plain_enqueue(keys=k, args=args)
            name = f"enqueue.lua {variant}"
            spent[name] = spent.get(name, 0.0) + redis_cpu(client) - t
            routes: list[Any] = [PREFIX, time.time(), 4000, "h", 3600, len(keys)]
            for key in keys:
                routes += [key, 2, "app.store", "", "0", "", "", "app.notify", "", "0", "", ""]
            script = admit_ix if variant == "with indexes" else admit_plain
            t = redis_cpu(client)
            script(keys=[f"{PREFIX}:due"], args=routes)
            name = f"admit.lua {variant}"
            spent[name] = spent.get(name, 0.0) + redis_cpu(client) - t
        client.delete("sc:q")
    out = {k: v * 1e6 / (rounds * len(bodies)) for k, v in spent.items()}
    t = time.process_time()
    for _ in range(5):
        for b in bodies:
            indexes.receipt_terms(b["event"], b)
    out["receipt_terms() in the ingress process"] = (
        (time.process_time() - t) * 1e6 / (5 * len(bodies))
    )
    return {k: round(v, 2) for k, v in out.items()}


def _first(found: Any) -> str:
    return bytes(found[0]).decode()


def index_bytes(client: redis.Redis, n: int) -> dict[str, float]:
    """Bytes per retained delivery the console adds, by part: ``used_memory`` freed by deleting
    each part in turn (what it really costs, allocator rounding included). Destructive."""
    parts: dict[str, list[bytes]] = {"lookups": [], "attribute indexes": [], "state indexes": []}
    parts["attempt histories"] = []
    for k in client.scan_iter(f"{PREFIX}:*", count=10_000):
        name = k.decode()
        if name.startswith(f"{PREFIX}:ix:find:"):
            parts["lookups"].append(k)
        elif name.startswith((f"{PREFIX}:ix:st:", f"{PREFIX}:ix:hs:")) or name == f"{PREFIX}:ix":
            parts["state indexes"].append(k)
        elif name.startswith(f"{PREFIX}:ix:"):
            parts["attribute indexes"].append(k)
        elif name.startswith(f"{PREFIX}:attempts:"):
            parts["attempt histories"].append(k)
    out: dict[str, float] = {}
    for part, names in parts.items():
        before = int(client.info("memory")["used_memory"])
        for start in range(0, len(names), 1000):
            client.delete(*names[start : start + 1000])
        out[part] = (before - int(client.info("memory")["used_memory"])) / n
    # The indexed states the ledger hashes keep ("~s", "~><handler>").
    before = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for i, k in enumerate(client.scan_iter(f"{PREFIX}:handled:*", count=10_000)):
        pipe.hdel(k, "~s", "~>app.store", "~>app.notify", "~>app.accounts")
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    out["state fields in ledger hashes"] = (before - int(client.info("memory")["used_memory"])) / n
    out["total"] = sum(out.values())
    return {k: round(v, 1) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="deliveries retained")
    ap.add_argument("--repeat", type=int, default=60, help="timings per figure")
    ap.add_argument("--json", type=Path, help="write the report here too")
    args = ap.parse_args(argv)
    report: dict[str, Any] = {"uptime before": os.popen("uptime").read().strip()}
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        try:
            client = redis.Redis.from_url(server.url)
            client.config_set("appendonly", "no")
            settings = Settings(
                redis_url=server.url, key_prefix=PREFIX, queue="bq", enqueue_batch_max=256
            )
            print("script costs (Redis CPU µs per delivery):", flush=True)
            report["script costs"] = script_costs(client, settings)
            print(f"  {report['script costs']}")
            client.flushall()
            print(f"filling {args.n:,} deliveries through enqueue.lua and the ledger scripts:")
            report["fill seconds"] = round(fill(settings, client, args.n), 1)
            report["retained"] = client.zcard(f"{PREFIX}:events")
            report["used_memory MB"] = round(int(client.info("memory")["used_memory"]) / 2**20)
            store = ConsoleStore(client, Keys(PREFIX), settings.dedup_ttl_seconds)
            report["counts"] = store.counts()
            print(f"  counts: {report['counts']}; uptime: {os.popen('uptime').read().strip()}")
            report["uptime measuring"] = os.popen("uptime").read().strip()
            report["pages"] = measure(store, client, args.repeat)
            report["used_memory bytes per delivery"] = round(
                int(client.info("memory")["used_memory"]) / max(1, args.n)
            )
            report["bytes per delivery added by the console"] = index_bytes(client, args.n)
            print(f"  bytes per delivery: {report['bytes per delivery added by the console']}")
        finally:
            server.stop()
    report["uptime after"] = os.popen("uptime").read().strip()
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
