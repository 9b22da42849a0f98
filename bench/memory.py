"""``make bench-memory``: Redis bytes per event, queued and retained, and where they go.

A private Redis (``maxmemory`` unset), the real ingress (``receiver.app:app``) and, later, a real
worker with the built-in ``log`` handler and one no-op handler (two handlers per event, as a small
deployment has). ``N`` signed ``upload_completed`` deliveries shaped like the sender's
(``uphooks_cli/simulate.py``: its headers, realistic bodies) are posted on loopback.

1. **queued**: with no worker running, every delivery acknowledged: ``used_memory`` delta / N is
   what one event costs while it waits in the backlog (record, events index, Celery message).
2. **retained**: a worker drains the backlog; once every (event, handler) pair is ``done`` and the
   queue is empty, the delta / N is what one event costs for the rest of the de-duplication
   window (record, index, handled hash), plus whatever the worker leaves behind for a while.

Each phase is broken down by key family with ``MEMORY USAGE`` over every key (a census, not a
sample: a few tens of thousands of keys cost Redis well under a second). What ``MEMORY USAGE``
does not see (the expires table, the main hash table's buckets) is the ``unattributed`` row.
The stored delivery record is also broken down by field, from a sample of records.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.run import PREFIX, SECRET, base_env, spawn, stop, uvicorn_server, verification_env
from uphooks.keys import Keys
from uphooks_cli import simulate
from uphooks_cli.embedded import RedisServer

QUEUE = "bench-memory"
PLATFORMS = ("instagram", "tiktok", "youtube", "x", "linkedin", "facebook")
WORKER_ARGS = ("--without-gossip", "--without-mingle", "-n", "memory@%h")


def used_memory(client: redis.Redis) -> int:
    info: dict[str, Any] = client.info("memory")
    return int(info["used_memory"])


def memory_stats(client: redis.Redis) -> dict[str, Any]:
    """MEMORY STATS, kept in the JSON report for whoever wants to dig further."""
    stats: dict[str, Any] = client.memory_stats()
    return stats


def family(key: str, keys: Keys) -> str:
    """The key family a Redis key belongs to (the names of uphooks/keys.py, kombu's, ours)."""
    if key == keys.events_index:
        return "events index (zset)"
    if key == keys.due:
        return "ledger schedule (zset due)"
    if key == QUEUE:
        return "queued Celery messages (list)"
    if key.startswith("unacked") or key.startswith("_kombu"):
        return "kombu bookkeeping"
    found = re.match(re.escape(keys.prefix) + r":([a-z-]+)", key)
    if found:
        return {
            "delivery": "delivery records (string)",
            "handled": "handled hashes (hash)",
            "redelivered": "message delivery counters (string, TTL 2x visibility)",
            "lease": "leases (string)",
            "dlq": "dead letters",
            "fact": "fact index (string, docs/reconciliation.md)",
        }.get(found.group(1), f"{keys.prefix}:{found.group(1)}*")
    return "other"


def census(client: redis.Redis, keys: Keys) -> dict[str, dict[str, int]]:
    """Key count and ``MEMORY USAGE ... SAMPLES 0`` bytes per family, over every key."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"keys": 0, "usage": 0})
    names = list(client.scan_iter(count=1000))
    for start in range(0, len(names), 1000):
        chunk = names[start : start + 1000]
        pipe = client.pipeline(transaction=False)
        for k in chunk:
            pipe.memory_usage(k, samples=0)
        for k, size in zip(chunk, pipe.execute(), strict=True):
            row = out[family(k.decode(), keys)]
            row["keys"] += 1
            row["usage"] += int(size or 0)
    return dict(out)


def freed_by_deleting(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Delete each family in turn and note how far ``used_memory`` fell: what it really costs
    (its keys' entries in the main and expires tables, allocator rounding included), which
    ``MEMORY USAGE`` only estimates. Destructive: run it last."""
    by_family: dict[str, list[bytes]] = defaultdict(list)
    for k in client.scan_iter(count=1000):
        by_family[family(k.decode(), keys)].append(k)
    freed: dict[str, int] = {}
    for name, members in by_family.items():
        before = used_memory(client)
        for start in range(0, len(members), 500):
            client.delete(*members[start : start + 500])
        freed[name] = before - used_memory(client)
    return freed


def record_fields(client: redis.Redis, keys: Keys, sample: int) -> dict[str, float]:
    """Mean bytes of each part of a stored delivery record, from ``sample`` records."""
    found: list[bytes] = client.zrange(keys.events_index, 0, sample - 1)  # type: ignore[assignment]
    members = [m.decode() for m in found]
    raws: list[bytes | None] = client.mget([keys.delivery(m) for m in members])  # type: ignore[assignment]
    pairs = [(m, raw) for m, raw in zip(members, raws, strict=True) if raw]
    if not pairs:
        return {}
    parts: dict[str, int] = defaultdict(int)
    for member, raw in pairs:
        parts["whole record"] += len(raw)
        parts["key name"] += len(keys.delivery(member))
        record = orjson.loads(raw)
        for name, value in record.items():
            # The field's bytes in the record as written: "name":value plus its comma.
            parts[f"field {name}"] += len(orjson.dumps({name: value})) - 1
        body = record.get("body")
        if isinstance(body, str):
            parts["body as posted"] += len(body.encode())
        for name, value in (record.get("headers") or {}).items():
            parts[f"header {name}"] += len(orjson.dumps({name: value})) - 1
    return {name: round(total / len(pairs), 1) for name, total in sorted(parts.items())}


def wait(what: str, predicate: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def all_done(client: redis.Redis, keys: Keys, acked: list[str], handlers: int) -> bool:
    if client.llen(QUEUE) or client.hlen("unacked"):
        return False
    pipe = client.pipeline(transaction=False)
    for key in acked:
        pipe.hvals(keys.handled(key))
    return all(sum(v == b"done" for v in vals) >= handlers for vals in pipe.execute())


def per_event(
    rows: dict[str, dict[str, int]], n: int, delta: int, freed: dict[str, int] | None = None
) -> dict[str, Any]:
    """Bytes per event by family: MEMORY USAGE's estimate and, when measured, what deleting
    the family freed; the rest of ``delta`` (the phase's growth of used_memory) is unattributed."""
    table: dict[str, Any] = {}
    for name, row in sorted(rows.items(), key=lambda kv: -kv[1]["usage"]):
        table[name] = {"keys": row["keys"], "memory_usage": round(row["usage"] / n, 1)}
        if freed is not None:
            table[name]["freed_by_delete"] = round(freed.get(name, 0) / n, 1)
    attributed = sum((freed or {r: v["usage"] for r, v in rows.items()}).values())
    table["unattributed"] = {"keys": 0, "memory_usage": round((delta - attributed) / n, 1)}
    return table


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = RedisServer(workdir / "redis", appendfsync="everysec").start()
    client = redis.Redis.from_url(server.url)
    # The slow log keeps the arguments of up to 128 slow commands (a batch's records): up to a
    # megabyte that belongs to no key and would blur a small run's figures.
    client.config_set("slowlog-log-slower-than", -1)
    keys = Keys(PREFIX)
    env = base_env(
        server.url,
        UPHOOKS_QUEUE=QUEUE,
        UPHOOKS_HANDLER_MODULES="bench.noop_handler",
        UPHOOKS_BUILTIN_LOG_HANDLER="true" if args.log_handler else "false",
        UPHOOKS_METRICS_ENABLED="false",
        **verification_env(),
    )
    handlers = 2 if args.log_handler else 1
    report: dict[str, Any] = {"events": args.events, "handlers_per_event": handlers}
    try:
        with uvicorn_server("receiver.app:app", env, workdir) as (url, _):
            time.sleep(0.5)
            before = used_memory(client)
            report["info_before"] = memory_stats(client)
            prepared = simulate.prepare(
                "upload_completed", args.events, platforms=PLATFORMS, secret=SECRET, seed=1
            )
            t0 = time.monotonic()
            results = simulate.send(
                url + "/webhooks/upload-post", prepared, concurrency=args.concurrency
            )
            report["post_seconds"] = round(time.monotonic() - t0, 1)
            acked = [orjson.loads(r.text)["idempotency_key"] for r in results if r.ok]
            if len(acked) != args.events:
                statuses = simulate.summarize(results, 1.0)["statuses"]
                raise RuntimeError(f"only {len(acked)} of {args.events} acknowledged: {statuses}")
            queued = used_memory(client) - before
            report["info_queued"] = memory_stats(client)
            messages = int(client.llen(QUEUE))
            report["queued"] = {
                "bytes_per_event": round(queued / args.events, 1),
                "celery_messages": messages,
                "events_per_message": round(args.events / max(messages, 1), 2),
                "by_family": per_event(census(client, keys), args.events, queued),
            }
            report["record"] = record_fields(client, keys, args.sample)

            log_path = workdir / "worker.log"
            worker = spawn(
                [sys.executable, "-m", "uphooks_cli", "worker", "-c", "2", *WORKER_ARGS],
                env | {"UPHOOKS_LOG_LEVEL": "WARNING"},
                log_path,
            )
            try:
                t0 = time.monotonic()
                wait(
                    f"the worker to finish (see {log_path})",
                    lambda: all_done(client, keys, acked, handlers),
                    args.timeout,
                )
                report["drain_seconds"] = round(time.monotonic() - t0, 1)
            finally:
                stop(worker)
            retained = used_memory(client) - before
            report["info_retained"] = memory_stats(client)
            rows = census(client, keys)
            freed = freed_by_deleting(client, keys)
            report["info_emptied"] = memory_stats(client)
            # What deleting every key did not give back is not per event (see show()).
            report["left_after_deleting_every_key"] = used_memory(client) - before
            report["retained"] = {
                "bytes_per_event": round(retained / args.events, 1),
                "by_family": per_event(rows, args.events, retained, freed),
            }
    finally:
        client.close()
        server.stop()
    return report


def show(report: dict[str, Any]) -> None:
    n, h = report["events"], report["handlers_per_event"]
    print(f"\n{n} upload_completed deliveries, {h} handler(s) each, signed like the sender's")
    for phase in ("queued", "retained"):
        data = report[phase]
        extra = ""
        if phase == "queued":
            extra = f" ({data['events_per_message']} events per Celery message)"
        print(f"\n{phase}: {data['bytes_per_event']:.0f} bytes per event{extra}")
        print(f"  {'MEMORY USAGE':>12} {'freed by DEL':>12}")
        for name, row in data["by_family"].items():
            keys = f"{row['keys']:>7} keys" if row["keys"] else " " * 12
            freed = row.get("freed_by_delete")
            freed_text = "" if freed is None else f"{freed:.1f} B"
            print(f"  {row['memory_usage']:>10.1f} B {freed_text:>12}  {keys}  {name}")
    print("\nstored delivery record, mean bytes by part:")
    for name, size in report["record"].items():
        print(f"  {size:>8.1f} B  {name}")
    print(
        f"\nleft after deleting every key: {report['left_after_deleting_every_key'] / 1e6:.2f} MB"
        " (hash table arrays, Redis internals; fixed, not per event)"
    )
    print(f"\nposted in {report['post_seconds']} s, drained in {report['drain_seconds']} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--sample", type=int, default=500, help="records broken down by field")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the worker")
    parser.add_argument(
        "--no-log-handler", dest="log_handler", action="store_false", help="one handler only"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="uphooks-bench-memory-") as tmp:
        report = measure(args, Path(tmp))
    show(report)
    if args.json:
        args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
