"""``python -m bench.ingress_callgrind``: instructions per request of whole servers, A beside ours.

Each contender of bench/ingress.py (the bare Starlette route A, ``uphooks serve`` as the Procfile
starts it, or another tree's ``uphooks serve`` with ``--variant LABEL=PATH``) runs under valgrind's
callgrind with a Redis of its own; after start-up and a warm-up, instrumentation is switched on,
``--requests`` signed deliveries are sent over ``--connections`` kept-alive connections (the
requests bench.run sends), and the instructions the server executed are read. User space only:
the kernel's share (TCP on loopback, the answer's write, the AOF's fsync in Redis) is not in
it, so this is not a CPU time, but it is the server's own work, and the machine's load does not
move it at all: on a shared machine, the figure to compare two versions of the ingress by, and
the nearest thing to a load-free ratio against A.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.bodies import write_requests
from bench.ingress import CONTENDERS, Contender, contender_env
from harness import procs
from harness.redis import free_port, running

_TOTALS = re.compile(r"^(?:summary|totals): (\d+)", re.M)


def _requests(path: Path) -> list[bytes]:
    """bench/wrk.lua's requests file as raw HTTP/1.1 requests."""
    out = []
    for line in path.read_bytes().splitlines():
        target, headers, body = line.split(b"\t", 2)
        head = b"".join(h.strip() + b"\r\n" for h in headers.split(b"|"))
        out.append(
            b"POST " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )  # fmt: skip
    return out


async def _send(port: int, requests: list[bytes], connections: int) -> dict[int, int]:
    statuses: dict[int, int] = {}
    queue = list(reversed(requests))

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while queue:
            writer.write(queue.pop())
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            statuses[status] = statuses.get(status, 0) + 1
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
        writer.close()

    await asyncio.gather(*(one_connection() for _ in range(connections)))
    return statuses


def _control(pid: int, *args: str) -> None:
    # Valgrind reads the command while the server runs code: its timers wake it within 0.5 s.
    subprocess.run(
        ["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=120
    )


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the server did not listen within {timeout:.0f} s; see {log}")


def count(c: Contender, requests: int, connections: int, workdir: Path) -> float:
    with running(workdir / f"redis-{c.name}") as server:
        env = contender_env(c, server.url)
        port = free_port()
        out = workdir / f"callgrind-{c.name}.out"
        log = workdir / f"server-{c.name}.log"
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            f"--log-file={workdir / f'valgrind-{c.name}.log'}",
            *c.command()(port),
        ]
        proc = procs.spawn(command, env, log, cwd=c.root)
        try:
            _wait_listening(port, proc, log, timeout=600)
            tag = uuid.uuid4().hex[:8]
            warm, measured = workdir / f"warm-{c.name}", workdir / f"measured-{c.name}"
            write_requests(warm, "w" + tag[:7], 300, True)
            write_requests(measured, tag, requests, True)
            asyncio.run(_send(port, _requests(warm), connections))
            _control(proc.pid, "--instr=on")
            statuses = asyncio.run(_send(port, _requests(measured), connections))
            _control(proc.pid, f"--dump={c.name}")
        finally:
            procs.stop(proc, timeout=120)
    answered = sum(n for s, n in statuses.items() if 200 <= s < 300)
    assert answered == requests, statuses
    dumps = sorted(workdir.glob(f"callgrind-{c.name}.out.*"), key=lambda p: p.stat().st_mtime)
    found = _TOTALS.search(dumps[0].read_text(errors="replace"))
    assert found, dumps
    return int(found.group(1)) / requests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--only", default="A,ours", help="contenders of bench/ingress.py")
    parser.add_argument("--variant", action="append", default=[], help="LABEL=PATH: serve@PATH")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args(argv)
    every = [
        Contender(n, *CONTENDERS[n], ours=n.startswith("ours")) for n in args.only.split(",") if n
    ]
    for spec in args.variant:
        label, _, root = spec.partition("=")
        every.append(
            Contender(label, "serve", f"serve from {root}", Path(root).resolve(), ours=True)
        )
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for c in every:
            figures[c.name] = count(c, args.requests, args.connections, Path(tmp))
            print(f"{c.name:>10}: {figures[c.name]:>12,.0f} instructions per request", flush=True)
    if "A" in figures:
        for name, n in figures.items():
            print(f"{name:>10}: {figures['A'] / n:.2f} x A's instructions per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
