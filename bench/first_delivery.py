"""``python -m bench.first_delivery``: the worker's Redis calls between a route message's task
start and its handler's start, with the message counted before routing (as a redelivery is, and
as every delivery was before) and with it counted by the admit call (a first delivery), one
after the other per message in one process against one Redis (``appendfsync always``), so the
machine's load and the disk's fsync times fall on both alike. docs/perf-notes/latency.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path

import redis

from bench.pattern_latency import _percentiles
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer
from workers.intake import Intaker
from workers.ledger import Ledger, Route


def measure(url: str, events: int, gap: float) -> dict[str, dict[str, dict[str, float]]]:
    settings = Settings(redis_url=url, key_prefix="fd", queue="fd-q")
    client = redis.Redis.from_url(url)
    keys = Keys(settings.key_prefix)
    intaker, ledger = Intaker(client, settings), Ledger(client, settings)
    times: dict[str, dict[str, list[float]]] = {
        way: {"intake": [], "admit": [], "both": []} for way in ("counted first", "in admit")
    }
    for _ in range(events):
        for way, spent in times.items():
            key, task = uuid.uuid4().hex, uuid.uuid4().hex
            client.set(keys.delivery(key), json.dumps({"key": key}))
            deferred = way == "in admit"
            t0 = time.perf_counter()
            intaker.take(task, [key], settings.queue, True, redelivered=not deferred)
            t1 = time.perf_counter()
            count = keys.deliveries_of(task) if deferred else ""
            ledger.admit([(key, [Route("bench.h", None, True)])], "bench", count)
            t2 = time.perf_counter()
            spent["intake"].append(t1 - t0)
            spent["admit"].append(t2 - t1)
            spent["both"].append(t2 - t0)
            time.sleep(gap)  # an open-loop low rate: nothing else queued, nothing to take
    return {
        way: {step: _percentiles(values) for step, values in spent.items()}
        for way, spent in times.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300, help="messages each way")
    parser.add_argument("--gap", type=float, default=0.02, help="seconds between messages")
    args = parser.parse_args(argv)
    print(f"# load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-first-delivery-") as tmp:
        server = RedisServer(Path(tmp)).start()  # appendfsync always
        try:
            out = measure(server.url, args.events, args.gap)
        finally:
            server.stop()
    print("| counted | intake p50 / p99 ms | admit p50 / p99 ms | both p50 / p99 ms | n |")
    print("|---|---:|---:|---:|---:|")
    for way, steps in out.items():
        cells = [
            f"{steps[s]['p50_ms']} / {steps[s]['p99_ms']}" for s in ("intake", "admit", "both")
        ]
        print(f"| {way} | {' | '.join(cells)} | {steps['both']['n']} |")
    print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
