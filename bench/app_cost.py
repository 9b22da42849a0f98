"""``python -m bench.app_cost``: the ingress app's own CPU per delivery, without sockets or Redis.

The public app (``receiver.app.create_listeners``, verification on with a ``whsec_`` secret, the
access log on as JSON into /dev/null) is called in-process with signed 600-byte deliveries; the
Enqueuer and the Redis headroom check are stand-ins that answer at once. What is measured is the
process CPU time per delivery of everything between uvicorn and Redis: the gate, the checks, the
signature, the key, the record, the answer, the metrics and the access line. A CPU time, not a
rate: it moves far less than throughput when other work shares the machine, so it is the figure
to compare a change by (the median of ``--rounds``).

``--callgrind`` runs one round under valgrind's callgrind instead and reports the instructions
executed per delivery, which the machine's load does not move at all (instrumentation is switched
on after start-up and warm-up, so a round takes about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any

from pydantic import SecretStr

from bench.bodies import make_body, signed_headers
from bench.common import PATH, SECRET
from receiver.app import create_listeners
from uphooks import logs
from uphooks.settings import Settings

Headers = list[tuple[bytes, bytes]]


class _Enqueuer:
    async def submit(self, key: str, record: bytes, *details: object) -> bool:
        return True


class _Headroom:
    def admit(self, size: int) -> bool:
        return True


def deliveries(n: int) -> list[tuple[Headers, bytes]]:
    now = int(time.time())
    tag = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        body = make_body(f"{tag}{i:012d}")
        headers = [
            (b"host", b"127.0.0.1:8000"),
            (b"content-type", b"application/json"),
            (b"user-agent", b"Upload-Post-Webhooks/1.0"),
            (b"x-upload-post-event", b"upload_completed"),
            *[(k.lower().encode(), v.encode()) for k, v in signed_headers(body, now).items()],
            (b"content-length", str(len(body)).encode()),
        ]
        out.append((headers, body))
    return out


def _callgrind_control(*args: str) -> None:
    """Ask the valgrind this process runs under for something, and keep running Python until it
    was done: callgrind reads its commands only while the program executes."""
    control = subprocess.Popen(
        ["callgrind_control", *args, str(os.getpid())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while control.poll() is None:
        sum(range(100))


async def measure(n: int, callgrind: bool = False) -> float:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        verify=["upload-post"],
        secrets=[SecretStr(SECRET)],
        key_prefix="bench",
        admin_port=0,
    )
    listeners = create_listeners(settings)
    listeners.public.state.enqueuer = _Enqueuer()
    listeners.public.state.headroom = _Headroom()
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def one(headers: Headers, body: bytes) -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 40000),
            "scheme": "http",
            "method": "POST",
            "root_path": "",
            "path": PATH,
            "raw_path": PATH.encode(),
            "query_string": b"",
            "headers": headers,
        }
        await listeners(scope, receive, send)  # type: ignore[arg-type]

    warm, timed = deliveries(500), deliveries(n)
    for headers, body in warm:
        await one(headers, body)
    if callgrind:
        _callgrind_control("--instr=on")
    start = time.process_time()
    for headers, body in timed:
        await one(headers, body)
    seconds = time.process_time() - start
    if callgrind:
        _callgrind_control("--dump=measured")
    assert statuses.count(202) == len(warm) + n, statuses[-5:]
    return seconds / n * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    parser.add_argument("--under-callgrind", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.callgrind:
        return _count(args.deliveries)
    logs.configure(Settings(_env_file=None, log_format="json"), "ingress")  # type: ignore[call-arg]
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    with open("/dev/null", "w") as null:
        handler.setStream(null)
        figures = [
            asyncio.run(measure(args.deliveries, args.under_callgrind)) for _ in range(args.rounds)
        ]
    print(
        f"ingress app, CPU per delivery: {statistics.median(figures):.1f} us "
        f"(rounds: {', '.join(f'{f:.1f}' for f in figures)})"
    )
    return 0


def _count(n: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={out}/callgrind.out",
                f"--log-file={out}/valgrind.log",
                sys.executable,
                "-m",
                "bench.app_cost",
                "--under-callgrind",
                "--rounds=1",
                f"--deliveries={n}",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        dump = next(p for p in os.listdir(out) if p.startswith("callgrind.out."))
        with open(os.path.join(out, dump)) as f:
            found = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    assert found, dump
    print(f"ingress app: {int(found.group(1)) / n:,.0f} instructions per delivery (callgrind)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
