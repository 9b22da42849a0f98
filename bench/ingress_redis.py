"""``python -m bench.ingress_redis``: Redis's CPU per delivery for the ingress's enqueue script.

The real Enqueuer (receiver/enqueue.py running receiver/enqueue.lua) keeps the benchmark's
deliveries (bench/bodies.py: signed-size ``upload_completed`` bodies, each with its facts and
console terms as the ingress computes them) in a Redis of its own (AOF on, ``appendfsync
always`` unless told otherwise), in batches of ``--batch`` as the group commit makes them under
load (bench.run reports a mean of 20-30 at 64 connections). What is measured is Redis's CPU time
per delivery (``INFO cpu``, user and system), and the Enqueuer's own: a CPU time, which other
work on the machine moves far less than a rate. Median of ``--rounds``.

``--callgrind`` runs Redis under valgrind's callgrind and reports the instructions Redis executed
per delivery instead (user space only: the AOF's write and fsync are left out), which the
machine's load does not move at all: the figure to compare two versions of the script by.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis

from bench.bodies import make_body
from harness.redis import RedisServer, running
from receiver.enqueue import Enqueuer
from uphooks import facts, indexes
from uphooks.settings import Settings


def _redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _deliveries(n: int) -> list[tuple[str, bytes, bytes, bytes]]:
    tag = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        body = make_body(f"{tag}{i:012d}")
        payload = orjson.loads(body)
        record = orjson.dumps(
            {
                "event": "upload_completed",
                "received_at": time.time(),
                "headers": {},
                "body": body.decode(),
            }
        )
        spec = facts.spec(facts.webhook_facts(payload))
        terms = indexes.receipt_terms("upload_completed", payload)
        out.append((f"{tag}{i:012d}", record, spec, terms))
    return out


class _Callgrind(RedisServer):
    """Redis under callgrind, counting only between :meth:`zero` and :meth:`instructions`."""

    def command(self) -> list[str]:
        out = self.data_dir / "callgrind.out"
        log = self.data_dir / "valgrind.log"
        return [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            f"--log-file={log}",
            *super().command(),
        ]

    def _control(self, *args: str) -> str:
        assert self.process is not None
        return subprocess.run(
            ["callgrind_control", *args, str(self.process.pid)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def zero(self) -> None:
        self._control("--zero")

    def instructions(self) -> float:
        self._control("--dump=measured")
        dumps = sorted(self.data_dir.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
        text = dumps[-1].read_text(errors="replace")
        found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
        assert found, dumps[-1]
        return float(found.group(1))


@contextlib.contextmanager
def _callgrind(data_dir: Path) -> Iterator[_Callgrind]:
    server = _Callgrind(data_dir)
    server.start(timeout=60)
    try:
        yield server
    finally:
        server.stop()


async def _keep(
    url: str, n: int, batch: int, counter: _Callgrind | None = None
) -> tuple[float, float]:
    settings = Settings(_env_file=None, redis_url=url, key_prefix="bench")  # type: ignore[call-arg]
    client = aioredis.Redis.from_url(url)
    enqueuer = Enqueuer(client, settings)
    await enqueuer.start()
    sync = redis.Redis.from_url(url)
    try:
        items, warm = _deliveries(n), _deliveries(300)
        # Warm: every index past its first 128 entries (a small sorted set is a list that each
        # insert scans; a long-running Redis holds long ones).
        for at in range(0, 300, batch):
            await asyncio.gather(*(enqueuer.submit(*i) for i in warm[at : at + batch]))
        if counter is not None:
            counter.zero()
        before, started = _redis_cpu(sync), time.process_time()
        for at in range(0, n, batch):
            flags = await asyncio.gather(*(enqueuer.submit(*i) for i in items[at : at + batch]))
            assert all(flags), flags
        own = time.process_time() - started
        used = _redis_cpu(sync) - before if counter is None else counter.instructions()
    finally:
        await enqueuer.stop()
        await client.aclose()
        sync.close()
    return used / n, own / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--appendfsync", default="always")
    parser.add_argument("--callgrind", action="store_true", help="count Redis's instructions")
    args = parser.parse_args(argv)
    if args.callgrind:
        with tempfile.TemporaryDirectory() as data, _callgrind(Path(data)) as server:
            count, _ = asyncio.run(_keep(server.url, args.deliveries, args.batch, server))
        print(
            f"enqueue, batches of {args.batch}: Redis executed {count:,.0f} instructions "
            f"per delivery (callgrind, user space)"
        )
        return 0
    redis_us, client_us = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as data, running(Path(data), args.appendfsync) as srv:
            in_redis, in_client = asyncio.run(_keep(srv.url, args.deliveries, args.batch))
        redis_us.append(in_redis * 1e6)
        client_us.append(in_client * 1e6)
    print(
        f"enqueue, batches of {args.batch}, appendfsync {args.appendfsync}: Redis CPU per "
        f"delivery {statistics.median(redis_us):.1f} us "
        f"(rounds: {', '.join(f'{f:.1f}' for f in redis_us)}); the Enqueuer's "
        f"{statistics.median(client_us):.1f} us"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
