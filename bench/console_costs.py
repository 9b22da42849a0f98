"""What bench/console.py measures the console's indexes cost, each beside its own baseline: Redis
CPU per delivery in the ingress script and ``admit.lua`` (the same scripts with the index lines
taken out), and the bytes per retained delivery (``used_memory`` freed part by part)."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path
from typing import Any

import redis

from bench.console_fill import PREFIX, payload, record
from uphooks import indexes
from uphooks.indexes import lookup_bucket_seconds
from workers.ledger import script_source


def redis_cpu(client: redis.Redis) -> float:
    """Seconds of CPU Redis's main thread has used: unlike wall time, not inflated when the
    machine is busy and Redis waits for a core."""
    cpu: dict[str, float] = client.info("cpu")
    return float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])


def script_costs(client: redis.Redis, rounds: int = 5, batch: int = 50) -> dict[str, Any]:
    """Redis CPU µs per delivery of enqueue.lua and admit.lua with the index lines and without
    (the same scripts with them taken out), in batches of ``batch`` (what the ingress's group
    commit makes under load), interleaved, over ``rounds`` x 2,000 deliveries; and the CPU µs the
    ingress process spends computing a delivery's terms."""
    lua = Path(sys.modules["receiver.enqueue"].__file__ or "").with_name("enqueue.lua").read_text()
    plain_enqueue = client.register_script(lua)
    admit_ix = client.register_script(script_source("admit.lua"))
    admit_plain = client.register_script(
        script_source("admit.lua").replace("if flags[1] ~= -1 then ix_sync(prefix, key) end", "")
    )
    rnd = random.Random(5)
    bodies = [payload(rnd, i) for i in range(2000)]
    recs = [record(b) for b in bodies]
    terms = [indexes.receipt_terms(b["event"], b) for b in bodies]
    spent: dict[str, float] = {}
    for r in range(rounds):
        for variant in ("with indexes", "without"):
            calls = []
            for start in range(0, len(bodies), batch):
                keys = [f"sc:{variant[:4]}{r}:{i}" for i in range(start, start + batch)]
                part, words = recs[start : start + batch], terms[start : start + batch]
                cut = len(f"{PREFIX}:delivery:")
                args: list[Any] = [3600, time.time(), "[", "]", "{}", cut]
                args += [",".join(str(len(x)) for x in part), b"".join(part), 600, "f:", "", ""]
                if variant == "with indexes":
                    lens = ",".join(str(len(t)) for t in words)
                    args += [f"{PREFIX}:ix:", lens, b"".join(words), lookup_bucket_seconds(3600)]
                k = ["sc:q", f"{PREFIX}:events", f"{PREFIX}:due"]
                k += [f"{PREFIX}:delivery:{x}" for x in keys]
                routes: list[Any] = [PREFIX, time.time(), 4000, "h", 3600, len(keys)]
                for key in keys:
                    routes += [key, 2, "app.store", "", "0", "", "", "app.notify", "", "0", "", ""]
                calls.append((k, args, routes))
            script = admit_ix if variant == "with indexes" else admit_plain
            t = redis_cpu(client)
            for k, args, _ in calls:
                plain_enqueue(keys=k, args=args)
            name = f"enqueue.lua {variant}"
            spent[name] = spent.get(name, 0.0) + redis_cpu(client) - t
            t = redis_cpu(client)
            for _, _, routes in calls:
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
