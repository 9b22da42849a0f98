"""bench/worker_patterns.py's senders: deliveries POSTed to the ingress, or bare Celery tasks
``delay()``-ed, either closed-loop (each sender waits for its answer) or open-loop (at fixed
times, noting when each was answered)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.bodies import make_body
from bench.loadgen import exchange

_KEY = re.compile(rb'"delivery_key":"([^"]+)"')


async def post_all(port: int, requests: list[bytes], senders: int) -> tuple[list[str], float]:
    """``senders`` connections, each posting and waiting for its answer; the keys accepted."""
    todo = iter(requests)
    keys: list[str] = []
    refused = 0

    async def sender() -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for request in todo:
            status, body = await exchange(reader, writer, request)
            found = _KEY.search(body)
            if status == 202 and found:
                keys.append(found.group(1).decode())
            else:
                refused += 1
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    elapsed = time.perf_counter() - t0
    if refused:
        raise RuntimeError(f"{refused} deliveries were not answered 202")
    return keys, elapsed


async def post_at_rate(port: int, requests: list[bytes], rate: float) -> dict[str, float]:
    """Open loop: request i goes at start + i / rate on a free connection; when each was
    answered 202 (time.time()), by delivery key."""
    free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    for _ in range(32):
        free.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    answered: dict[str, float] = {}

    async def one(request: bytes) -> None:
        conn = await free.get()
        status, body = await exchange(*conn, request)
        at = time.time()
        free.put_nowait(conn)
        found = _KEY.search(body)
        if status != 202 or not found:
            raise RuntimeError(f"answered {status}: {body[:200]!r}")
        answered[found.group(1).decode()] = at

    start = time.monotonic()
    tasks = []
    for i, request in enumerate(requests):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(request)))
    await asyncio.gather(*tasks)
    while not free.empty():
        free.get_nowait()[1].close()
    return answered


def delay_all(url: str, queue: str, tag: str, events: int, senders: int) -> float:
    """``senders`` threads ``delay()`` the bare no-op task, one event per message."""
    from bench.celery_noop import noop

    bodies = [make_body(f"{tag[:8]:>8}{i:012d}").decode() for i in range(events)]
    todo = iter(bodies)
    lock = threading.Lock()

    def sender() -> None:
        while True:
            with lock:
                body = next(todo, None)
            if body is None:
                return
            noop.apply_async(args=[body], queue=queue)  # delay(), onto the staging list

    t0 = time.perf_counter()
    with ThreadPoolExecutor(senders) as pool:
        for future in [pool.submit(sender) for _ in range(senders)]:
            future.result()
    return time.perf_counter() - t0


def delay_at_rate(count: int, rate: float, claim: bool = False) -> dict[str, float]:
    """Open loop: ``stamp.delay(name)`` (``claimed.delay(name)`` with ``claim``) at start + i /
    rate, from a pool of threads; when each ``delay()`` returned (time.time()), by name."""
    from bench.celery_stamp import claimed
    from bench.celery_stamp import stamp as plain

    stamp = claimed if claim else plain

    answered: dict[str, float] = {}
    tag = uuid.uuid4().hex[:8]

    def one(name: str) -> None:
        stamp.delay(name)
        answered[name] = time.time()

    start = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        futures = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, f"{tag}-{i}"))
        for future in futures:
            future.result()
    return answered
