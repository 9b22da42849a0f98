"""What a refused request costs the ingress, beside a valid delivery measured in the same run.

A real ``uphooks serve`` (signatures on, 1 or 2 secrets) gets a fixed number of requests of one
kind over one keep-alive connection; the ingress process's CPU time (user + system, from
/proc) divided by the requests is the cost of one. Kinds: a valid 600-byte delivery (the
baseline: verified, kept in Redis), a request without signature headers (refused on its head),
a forged delivery with well-formed fresh headers and a body of the maximum size (read whole, two
HMACs per secret, refused 503), and the same forgery from a throttled source (answered 429
before its body is read; the connection is then closed, so the client reconnects).

    python -m bench.refusals            # or as part of `make bench`
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import commands, procs, wait
from uphooks_cli import simulate
from uphooks_cli.embedded import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PATH = "/webhooks/upload-post"
SECRETS = [
    "whsec_" + base64.b64encode(b"refusal bench secret one, unused").decode(),
    "whsec_" + base64.b64encode(b"refusal bench secret two, unused").decode(),
]
FORGER = "whsec_" + base64.b64encode(b"not one of ours, for the forgery!").decode()
MAX_BODY = 1024 * 1024
EVENT = "upload_completed"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Ingress:
    port: int
    pid: int


@contextmanager
def ingress(redis_url: str, workdir: Path, **env: str) -> Iterator[Ingress]:
    port = free_port()
    full = dict(os.environ)
    for name in [n for n in full if n.startswith("UPHOOKS_")]:
        del full[name]
    full.update(
        PYTHONPATH=str(ROOT),
        REDIS_URL=redis_url,
        UPHOOKS_KEY_PREFIX=f"refusals{port}",
        UPHOOKS_QUEUE=f"refusals{port}",
        UPHOOKS_LOG_LEVEL="WARNING",
        UPHOOKS_ADMIN_PORT="0",
        UPHOOKS_MAX_BODY_BYTES=str(MAX_BODY),
        **env,
    )
    log = workdir / f"ingress-{port}.log"
    proc = procs.spawn(commands.serve(port), full, log)
    try:
        wait.until_listening(proc, port, log, expect=b"HTTP/1.1", what="ingress")
        yield Ingress(port, proc.pid)
    finally:
        procs.stop(proc)


def _request(body: bytes, headers: dict[str, str]) -> bytes:
    head = f"POST {PATH} HTTP/1.1\r\nHost: bench\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() != "content-length")
    return head.encode() + b"\r\n" + body


def _read_answer(sock: socket.socket) -> tuple[int, bool]:
    """The status, and whether the server closes the connection after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length, close = 0, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"connection" and b"close" in value.lower():
            close = True
    while len(rest) < length:
        rest += sock.recv(65536)
    return int(head.split(b" ", 2)[1]), close


def drive(port: int, requests: list[bytes]) -> Counter[str]:
    """Send each request and read its answer, reconnecting whenever the server closed."""
    outcomes: Counter[str] = Counter()
    sock: socket.socket | None = None
    for raw in requests:
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            sock.sendall(raw)
            status, close = _read_answer(sock)
            outcomes[str(status)] += 1
            if close:
                sock.close()
                sock = None
        except OSError:
            outcomes["reset"] += 1
            if sock is not None:
                sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return outcomes


def _valid(n: int, secret: str) -> list[bytes]:
    items = simulate.prepare("upload_completed", n, secret=secret, seed=11)
    return [_request(i.body, i.headers) for i in items]


def _forged(n: int, size: int) -> list[bytes]:
    """``n`` times one well-formed, fresh delivery of ``size`` bytes signed with another secret
    (its delivery id is ``forged``, so the copies differ in nothing the ingress reads)."""
    pad = size - len(b'{"event":"upload_completed","pad":""}')
    body = b'{"event":"upload_completed","pad":"' + b"f" * pad + b'"}'
    now = int(time.time())
    headers = simulate.headers_for(EVENT, body, secret=FORGER, timestamp=now, delivery_id="forged")
    return [_request(body, headers)] * n


def _unsigned(n: int) -> list[bytes]:
    body = simulate.prepare("upload_completed", 1, seed=3)[0].body
    return [_request(body, {"Content-Type": "application/json"})] * n


def measure(ing: Ingress, requests: list[bytes]) -> tuple[float, Counter[str]]:
    drive(ing.port, requests[: max(5, len(requests) // 10)])  # warm up
    before = _cpu_seconds(ing.pid)
    outcomes = drive(ing.port, requests)
    return (_cpu_seconds(ing.pid) - before) / len(requests), outcomes


def run(n_small: int = 2000, n_large: int = 150) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="uphooks-refusals-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        try:
            for secrets in (1, 2):
                env = {
                    "UPHOOKS_VERIFY": "upload-post",
                    "UPHOOKS_SECRETS": ",".join(SECRETS[:secrets]),
                }
                unthrottled = {"UPHOOKS_REFUSAL_BURST": "100000000", **env}
                with ingress(server.url, workdir, **unthrottled) as ing:
                    base, _ = measure(ing, _valid(n_small, SECRETS[0]))
                    cases = [
                        ("valid delivery, 600 B (baseline)", base, Counter({"202": n_small})),
                        ("no signature headers (401)", *measure(ing, _unsigned(n_small))),
                        (
                            "forged, fresh headers, 1 MiB body (503)",
                            *measure(ing, _forged(n_large, MAX_BODY)),
                        ),
                        (
                            "forged, fresh headers, 600 B body (503)",
                            *measure(ing, _forged(n_small, 600)),
                        ),
                    ]
                throttled = {
                    **env,
                    "UPHOOKS_REFUSAL_BURST": "1",
                    "UPHOOKS_REFUSAL_RATE_PER_SECOND": "0.001",
                }
                with ingress(server.url, workdir, **throttled) as ing:
                    cases += [
                        (
                            "throttled source: forged 1 MiB (429, body unread)",
                            *measure(ing, _forged(n_large, MAX_BODY)),
                        ),
                        (
                            "throttled source: forged 600 B (verified, 429)",
                            *measure(ing, _forged(n_small, 600)),
                        ),
                    ]
                for name, seconds, outcomes in cases:
                    rows.append(
                        {
                            "secrets": secrets,
                            "request": name,
                            "cpu_us": round(seconds * 1e6, 1),
                            "vs_valid": round(seconds / base, 2),
                            "answers": dict(outcomes),
                        }
                    )
        finally:
            server.stop()
    return {"rows": rows}


def print_table(report: dict[str, Any]) -> None:
    print("\nCPU per request in the ingress process (refused vs valid, same run)")
    print(f"{'secrets':>7}  {'request':<52} {'CPU µs':>9} {'x valid':>8}  answers")
    for row in report["rows"]:
        print(
            f"{row['secrets']:>7}  {row['request']:<52} {row['cpu_us']:>9.1f} "
            f"{row['vs_valid']:>8.2f}  {row['answers']}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=2000, help="requests per small-body case")
    parser.add_argument("--large", type=int, default=150, help="requests per 1 MiB case")
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    args = parser.parse_args(argv)
    report = run(args.small, args.large)
    print_table(report)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
