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

The deliveries are bench/console_fill.py's, the index costs bench/console_costs.py's; this module
times the store's queries and reports.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.console_costs import index_bytes, script_costs
from bench.console_fill import PREFIX, fill
from console.store import ConsoleStore, EventQuery
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer


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


def _first(found: Any) -> str:
    return bytes(found[0]).decode()


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
            report["script costs"] = script_costs(client)
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
