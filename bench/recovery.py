"""``make bench-recovery``: what the ledger's scheduler pass costs with 1,000,000 deliveries kept.

The scheduler (workers/schedule.py) runs in every worker every second, so its idle pass must not
grow with what Redis retains, and a pass with work must cost what is overdue, not what is kept.
This fills a private Redis (appendfsync everysec) with ``--retained`` settled deliveries as the
pipeline leaves them (record, ledger hash, events index), plus ``--open`` pairs waiting for a
retry an hour from now, then times, for each number of overdue items:

- **ours**: ``Scheduler.move_due()``, one pass (Lua: read the item's ledger state, publish a
  Celery message per 8 pairs, re-score the item);
- **baseline**: the least any mover can do for the same items in the same run: one
  ``ZRANGEBYSCORE`` + ``LPUSH`` of one minimal message per 8 items + ``ZADD`` re-score, pipelined,
  with no state read.

The lag after the pass (oldest overdue item) must be 0. Figures go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import orjson
import redis

from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer
from workers.schedule import PER_MESSAGE, Scheduler

PREFIX = "benchrec"
QUEUE = "benchrec-q"


#: Writes a chunk of settled deliveries server-side: filling a million from Python takes minutes.
_FILL = """
local prefix, first, last, now, open_below = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
  tonumber(ARGV[4]), tonumber(ARGV[5])
for i = first, last do
  local key = string.format('d:%07d', i)
  redis.call('SET', prefix .. ':delivery:' .. key, string.format(ARGV[6], key))
  redis.call('HSET', prefix .. ':handled:' .. key, '~', 1, 'uphooks.log', 'done')
  redis.call('ZADD', prefix .. ':events', now - last + i, key)
  if i < open_below then
    redis.call('HSET', prefix .. ':handled:' .. key, 'h', 'retrying', 'h#', '1.2')
    redis.call('ZADD', prefix .. ':due', now + 3600, key .. '|h')
  end
end
return last - first + 1
"""


def fill(r: redis.Redis, keys: Keys, retained: int, open_pairs: int) -> None:
    body = orjson.dumps(
        {"event": "upload_completed", "platform": "tiktok", "user_email": "a@example.com"}
    ).decode()
    record = orjson.dumps(
        {"key": "KEY", "event": "upload_completed", "received_at": time.time(), "body": body}
    ).decode()
    template = record.replace("%", "%%").replace("KEY", "%s")
    script = r.register_script(_FILL)
    for first in range(0, retained, 10_000):
        last = min(first + 10_000, retained) - 1
        script(args=[keys.prefix, first, last, time.time(), open_pairs, template])


def make_overdue(r: redis.Redis, keys: Keys, n: int, at: float) -> None:
    if n == 0:
        return
    members: list[bytes] = r.zrange(keys.due, 0, n - 1)  # type: ignore[assignment]
    pipe = r.pipeline(transaction=False)
    for m in members:
        key = m.decode().rpartition("|")[0]
        pipe.hset(keys.handled(key), mapping={"h": "retrying", "h#": "1.2"})
        pipe.zadd(keys.due, {m: at})
    pipe.execute()


def baseline(r: redis.Redis, keys: Keys, at: float) -> int:
    members: list[bytes] = r.zrangebyscore(keys.due, "-inf", at)  # type: ignore[assignment]
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(members), PER_MESSAGE):
        chunk = [m.decode() for m in members[i : i + PER_MESSAGE]]
        pipe.lpush(QUEUE, orjson.dumps({"pairs": chunk}))
    if members:
        pipe.zadd(keys.due, {m: at + 600 for m in members})
    pipe.execute()
    return len(members)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--retained", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=20_000)
    parser.add_argument("--overdue", default="0,100,1000,10000")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendfsync="everysec").start()
        try:
            run(server.url, args.retained, args.open, args.overdue, args.rounds)
        finally:
            server.stop()


def run(url: str, retained: int, open_pairs: int, overdue_list: str, rounds: int) -> None:
    r = redis.Redis.from_url(url)
    keys = Keys(PREFIX)
    settings = Settings(redis_url=url, key_prefix=PREFIX, queue=QUEUE, recover_after_seconds=600)
    started = time.perf_counter()
    fill(r, keys, retained, open_pairs)
    info = r.info("memory")
    print(
        f"filled {retained:,} retained deliveries and {open_pairs:,} open pairs in "
        f"{time.perf_counter() - started:.0f}s; used_memory {info['used_memory_human']}"
    )
    scheduler = Scheduler(r, settings)
    print("| overdue | ours p50 ms | baseline p50 ms | ratio | lag after |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(x) for x in overdue_list.split(",")):
        ours: list[float] = []
        base: list[float] = []
        lags: list[float] = []
        for _ in range(rounds):
            at = time.time()
            make_overdue(r, keys, n, at - 1)
            r.delete(QUEUE)
            t0 = time.perf_counter()
            moved = scheduler.move_due(at)
            ours.append(time.perf_counter() - t0)
            assert moved.pairs == n, (moved, n)
            lags.append(scheduler.lag(at))
            make_overdue(r, keys, n, at - 1)
            r.delete(QUEUE)
            t0 = time.perf_counter()
            assert baseline(r, keys, at) == n
            base.append(time.perf_counter() - t0)
        o, b = statistics.median(ours) * 1000, statistics.median(base) * 1000
        print(f"| {n:,} | {o:.2f} | {b:.2f} | {o / b:.2f}x | {max(lags):.1f}s |")
    r.delete(QUEUE)


if __name__ == "__main__":
    main()
