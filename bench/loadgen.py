"""A Python HTTP/1.1 load generator, used only when wrk is not installed.

Same input (bench/run.py's requests file) and same output line as bench/wrk.lua, so the driver
works either way. One Python process cannot saturate the servers measured here: its figures show
the generator's limit more than the server's, and the driver labels them so.

Usage: python -m bench.loadgen URL REQUESTS_FILE CONNECTIONS SECONDS
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import orjson

_KEY = re.compile(rb'"idempotency_key":"([^"]+)"')


def _requests(path: str, host: str) -> list[bytes]:
    out = []
    with open(path, "rb") as lines:
        for line in lines:
            target, headers, body = line.rstrip(b"\n").split(b"\t", 2)
            head = [b"POST " + target + b" HTTP/1.1", b"Host: " + host.encode()]
            head += [h for h in headers.split(b"|") if h]
            head.append(b"Content-Length: " + str(len(body)).encode())
            out.append(b"\r\n".join(head) + b"\r\n\r\n" + body)
    return out


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    """One request on a kept-alive connection: its answer's status and body."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return int(head[9:12]), body


async def _client(
    host: str,
    port: int,
    requests: list[bytes],
    start: int,
    step: int,
    stop_at: float,
    latencies: list[float],
    statuses: Counter[int],
    keys: list[bytes],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start
    while time.monotonic() < stop_at:
        t0 = time.perf_counter()
        status, body = await exchange(reader, writer, requests[i % len(requests)])
        latencies.append(time.perf_counter() - t0)
        statuses[status] += 1
        if status < 300 and (m := _KEY.search(body)):
            keys.append(m.group(1))
        i += step
    writer.close()


def _write_keys(path: str, keys: list[bytes]) -> None:
    with open(path, "wb") as out:
        out.write(b"".join(k + b"\n" for k in keys))


async def main(url: str, path: str, connections: int, seconds: float) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = _requests(path, host)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    keys: list[bytes] = []
    t0 = time.monotonic()
    stop_at = t0 + seconds
    await asyncio.gather(
        *(
            _client(host, port, requests, c, connections, stop_at, latencies, statuses, keys)
            for c in range(connections)
        )
    )
    elapsed = time.monotonic() - t0
    latencies.sort()

    def pct(p: float) -> int:
        return int(latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e6)

    _write_keys(os.environ["BENCH_KEYS_FILE"], keys)
    summary = {
        "requests": len(latencies),
        "duration_us": int(elapsed * 1e6),
        "bytes": 0,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0},
        "latency_us": {
            "p50": pct(0.5),
            "p90": pct(0.9),
            "p99": pct(0.99),
            "max": pct(1.0),
            "mean": sum(latencies) / len(latencies) * 1e6,
        },
        "wrapped": max(0, len(latencies) // len(requests)),
    }
    print("WRKJSON " + orjson.dumps(summary).decode())


if __name__ == "__main__":
    url, path, connections, seconds = sys.argv[1:5]
    asyncio.run(main(url, path, int(connections), float(seconds)))
