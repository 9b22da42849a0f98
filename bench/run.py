"""``make bench``: our ingress and workers beside their baselines, in one run (issue 7).

Ingress: the baselines (bench/apps.py) and ``receiver.app:app`` each run in one uvicorn process
with the same settings (uvloop, httptools, no access log), in interleaved rounds, under wrk with
the same Lua script (bench/wrk.lua) and the same kind of 600-byte ``upload_completed`` bodies
(signed when the ingress verifies signatures). Medians of the rounds, and ratios to baseline A
taken round by round. After each run of our ingress, every key it acknowledged is looked up in
Redis (record, events index, queued Celery message).

Workers: a backlog is put in a staging list, the worker is started and waits until ready, then the
list is renamed onto the queue it reads, and the clock runs until the queue and kombu's unacked
set are empty. Bare Celery no-op task vs our worker with one no-op handler, prefork -c2 and solo.
Then every event must have exactly one handler run and one done marker.

Figures drift ~30% within a session on a shared 2-core machine: only the ratios of one run count.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from bench.probe import READY_KEY, RUNS_KEY
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer, find_redis_server, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "wrk.lua"
PATH = "/webhooks/upload-post"
# Shaped like a real signing secret (whsec_ + base64): the ingress tries both key readings.
SECRET = "whsec_" + base64.b64encode(b"uphooks benchmark secret, not for use").decode()
BODY_SIZE = 600
PREFIX = "bench"
OUR_QUEUE = "bench-ours"
TEMPLATE = "bench-template-"  # staged worker backlogs, copied for each drain

CONTENDERS: dict[str, tuple[str, str]] = {
    "A0": ("bench.apps:a0", "raw ASGI callable answering 202"),
    "A": ("bench.apps:a", "Starlette route answering 202, body unread"),
    "C": ("bench.apps:c", "read body, parse, pydantic-validate, await redis.asyncio LPUSH"),
    "D": ("bench.apps:d", "read body, parse, pydantic-validate, task.delay() in the endpoint"),
    "ours": ("receiver.app:app", "receiver.app:app (verify, de-duplicate, durable enqueue)"),
}
UVICORN_FLAGS = [
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--no-access-log",
    "--log-level",
    "warning",
    "--workers",
    "1",
]
WORKER_FLAGS = ["--without-gossip", "--without-mingle", "--without-heartbeat"]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- request bodies ---------------------------------------------------------------------------


def _payload(job: str, caption: str) -> dict[str, Any]:
    return {
        "event": "upload_completed",
        "job_id": job,
        "user_email": "creator@example.com",
        "profile_username": "bench_profile",
        "platform": "instagram",
        "media_type": "video",
        "title": "A benchmark upload",
        "caption": caption,
        "result": {
            "success": True,
            "url": f"https://www.instagram.com/p/{job}/",
            "publish_id": job,
            "post_id": job,
            "error": None,
        },
        "created_at": "2024-03-15T14:30:00.000000",
    }


def make_body(job: str) -> bytes:
    """A compact ``upload_completed`` of exactly BODY_SIZE bytes for a job id of 20 characters."""
    assert len(job) == 20, job
    base = len(orjson.dumps(_payload(job, "")))
    return orjson.dumps(_payload(job, "#" * (BODY_SIZE - base)))


def verification_env() -> dict[str, str]:
    """The env that turns on signature verification, when this build of the ingress has it."""
    fields = Settings.model_fields
    if "verify" in fields:
        env = {"UPHOOKS_VERIFY": "upload-post"}
        for name in ("secrets", "webhook_secrets", "secret"):
            if name in fields:
                env[f"UPHOOKS_{name.upper()}"] = SECRET
                return env
    return {}


def write_requests(path: Path, tag: str, count: int, signed: bool) -> None:
    """One delivery per line with a fresh job id (so none is a duplicate), signed when asked."""
    key = SECRET.encode()
    now = str(int(time.time()))
    base = (
        "Content-Type: application/json|User-Agent: Upload-Post-Webhooks/1.0"
        "|X-Upload-Post-Event: upload_completed"
    )
    with path.open("wb") as out:
        for i in range(count):
            body = make_body(f"{tag[:8]:>8}{i:012d}")
            headers = base
            if signed:
                digest = hmac.new(key, now.encode() + b"." + body, hashlib.sha256).hexdigest()
                headers += (
                    f"|X-Upload-Post-Timestamp: {now}|X-Upload-Post-Signature: sha256={digest}"
                )
            out.write(f"{PATH}\t{headers}\t".encode() + body + b"\n")


# -- processes ------------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


class Sampler:
    """Samples RSS of a process (and its children) every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set():
            kids = [rss_kb(c) for c in children(self.pid)]
            self.samples.append((time.monotonic() - self._t0, rss_kb(self.pid), kids))
            self._stop.wait(self.interval)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def max_mb(self) -> float:
        return max((s[1] for s in self.samples), default=0) / 1024


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(
            args,
            env=env,
            cwd=env.get("PYTHONPATH", ROOT),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM to the main process only: a Celery worker then stops its pool children itself,
    and they run their shutdown handlers (bench/probe.py flushes its counts there)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def base_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for name in list(env):
        if name.startswith("UPHOOKS_"):
            del env[name]
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": redis_url,
            "BENCH_REDIS_URL": redis_url,
            "UPHOOKS_REDIS_URL": redis_url,
            "UPHOOKS_KEY_PREFIX": PREFIX,
            "UPHOOKS_LOG_LEVEL": "WARNING",
            # The load generator is one source with many connections; no admin listener.
            "UPHOOKS_MAX_CONNECTIONS_PER_SOURCE": "4096",
            "UPHOOKS_ADMIN_PORT": "0",
        }
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def uvicorn_server(
    target: str, env: dict[str, str], workdir: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "--factory", target, "--host", "127.0.0.1"]
    args += ["--port", str(port), *UVICORN_FLAGS]
    proc = spawn(args, env, workdir / f"server-{target.replace(':', '-')}-{port}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as s,
            ):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1"):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{target} did not start; see {workdir}")
            time.sleep(0.1)
        yield url, proc
    finally:
        stop(proc)


# -- load generation ------------------------------------------------------------------------


@dataclass
class Load:
    requests: int
    seconds: float
    statuses: dict[str, int]
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    acked_keys: list[str] = field(repr=False, default_factory=list)
    generator: str = "wrk"
    wrapped: int = 0

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("2"))

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.seconds


def run_load(
    url: str, requests_file: Path, seconds: float, connections: int, threads: int, workdir: Path
) -> Load:
    keys_file = workdir / "acked-keys.txt"
    keys_file.unlink(missing_ok=True)
    if shutil.which("wrk"):
        cmd = [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{max(1, round(seconds))}s",
        ]
        cmd += ["--timeout", "10s", "-s", str(LUA), url + PATH, "--", str(requests_file)]
        cmd += [str(threads)]
        generator = "wrk"
    else:
        cmd = [sys.executable, "-m", "bench.loadgen", url, str(requests_file)]
        cmd += [str(connections), str(seconds)]
        generator = "python fallback (bench/loadgen.py): limited by the generator, not comparable"
    env = dict(os.environ, BENCH_KEYS_FILE=str(keys_file), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"load generator failed: {done.stdout}\n{done.stderr}")
    data = orjson.loads(line[len("WRKJSON ") :])
    keys = keys_file.read_text().split() if keys_file.exists() else []
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        statuses={str(k): v for k, v in data["statuses"].items()},
        errors=data["errors"],
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        acked_keys=keys,
        generator=generator,
        wrapped=data.get("wrapped", 0),
    )


# -- Redis ----------------------------------------------------------------------------------


def reset(client: redis.Redis) -> None:
    """Empty Redis and shrink its append-only file, so every contender starts alike."""
    client.flushall()
    client.bgrewriteaof()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)


def queued_batches(client: redis.Redis, queue: str) -> list[list[str]]:
    """The delivery keys each of our Celery messages on ``queue`` names."""
    batches = []
    for raw in client.lrange(queue, 0, -1):
        message = orjson.loads(raw)
        args = orjson.loads(message["body"])[0]
        batches.append(list(args[0]))
    return batches


def check_acked(client: redis.Redis, acked: list[str], queue: str) -> dict[str, Any]:
    """Every acknowledged key must have its record, its index entry and one queued message."""
    queued = Counter(k for batch in queued_batches(client, queue) for k in batch)
    found = 0
    for start in range(0, len(acked), 5000):
        chunk = acked[start : start + 5000]
        pipe = client.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(f"{PREFIX}:delivery:{key}")
            pipe.zscore(f"{PREFIX}:events", key)
        answers = pipe.execute()
        for i, key in enumerate(chunk):
            if answers[2 * i] and answers[2 * i + 1] is not None and queued[key] == 1:
                found += 1
    return {
        "acknowledged": len(acked),
        "acknowledged_found_in_redis": found,
        "enqueued_over_acknowledged": round(found / len(acked), 6) if acked else None,
        "events_index": int(client.zcard(f"{PREFIX}:events")),
        "keys_queued_more_than_once": sum(1 for n in queued.values() if n > 1),
    }


def batch_sizes(batches: list[list[str]]) -> dict[str, Any]:
    sizes = sorted(len(b) for b in batches)
    if not sizes:
        return {}
    return {
        "messages": len(sizes),
        "events": sum(sizes),
        "mean": round(sum(sizes) / len(sizes), 1),
        "p50": sizes[len(sizes) // 2],
        "p90": sizes[int(len(sizes) * 0.9)],
        "max": sizes[-1],
    }


# -- ingress --------------------------------------------------------------------------------


@dataclass
class Contender:
    name: str
    target: str
    what: str
    root: Path = ROOT  # another source tree: a variant of our ingress (--variant)
    env: dict[str, str] = field(default_factory=dict)  # extra variables for this contender

    @property
    def ours(self) -> bool:
        return self.target == CONTENDERS["ours"][0]


def contenders(args: argparse.Namespace) -> list[Contender]:
    out = [Contender(n, *CONTENDERS[n]) for n in CONTENDERS if n in args.only]
    for spec in args.variant:
        # LABEL=[module:factory@]PATH[?NAME=VALUE&...]: our ingress (or any app, for taking
        # costs apart) from another source tree, with extra environment variables.
        label, _, rest = spec.partition("=")
        root, _, query = rest.partition("?")
        target = CONTENDERS["ours"][0]
        if "@" in root:
            target, _, root = root.partition("@")
        env = dict(pair.split("=", 1) for pair in query.split("&") if pair)
        what = f"{target} from {root}" + (f" with {query}" if query else "")
        out.append(Contender(label, target, what, Path(root or ROOT).resolve(), env))
    return out


def bench_ingress(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    verify = verification_env()
    signed = bool(verify)
    small = workdir / "requests-fixed.txt"
    write_requests(small, "fixed", 4096, signed)
    lines = int(args.duration * args.max_rate)
    rounds: list[dict[str, dict[str, Any]]] = []
    every = contenders(args)
    for round_no in range(1, args.rounds + 1):
        result: dict[str, dict[str, Any]] = {}
        # Interleaved: every contender once per round; the order turns each round.
        shift = (round_no - 1) % len(every)
        for c in every[shift:] + every[:shift]:
            reset(client)
            env = base_env(url, BENCH_QUEUE=f"bench-{c.name.lower()}", UPHOOKS_QUEUE=OUR_QUEUE)
            env["PYTHONPATH"] = str(c.root)
            env.update(c.env)
            main_file = small
            warm = small
            if c.ours:
                env.update(verify)
                env.update(c.env)
                tag = uuid.uuid4().hex[:8]
                warm = workdir / "requests-warm.txt"
                write_requests(warm, "w" + tag[:7], int(args.warmup * args.max_rate), signed)
                main_file = workdir / "requests-main.txt"
                write_requests(main_file, tag, lines, signed)
            with uvicorn_server(c.target, env, workdir) as (server_url, proc):
                run_load(server_url, warm, args.warmup, args.connections, args.threads, workdir)
                cpu0, rcpu0 = cpu_seconds(proc.pid), redis_cpu_seconds(client)
                with Sampler(proc.pid) as rss:
                    load = run_load(
                        server_url,
                        main_file,
                        args.duration,
                        args.connections,
                        args.threads,
                        workdir,
                    )
                user, system = (b - a for a, b in zip(cpu0, cpu_seconds(proc.pid), strict=True))
                cpu = user + system
                rcpu = redis_cpu_seconds(client) - rcpu0
            row: dict[str, Any] = {
                "ok_per_s": round(load.ok_per_s, 1),
                # Where the two cores went: CPU per answered request, server and Redis.
                "server_cpu_us_per_req": round(cpu / max(load.requests, 1) * 1e6, 1),
                "server_cpu_share": round(cpu / load.seconds, 2),
                "server_sys_share": round(system / cpu, 2) if cpu else 0,
                "redis_cpu_us_per_req": round(rcpu / max(load.requests, 1) * 1e6, 1),
                "p50_ms": load.p50_ms,
                "p99_ms": load.p99_ms,
                "statuses": load.statuses,
                "errors": load.errors,
                "rss_max_mb": round(rss.max_mb, 1),
                "generator": load.generator,
            }
            if c.ours:
                row["check"] = check_acked(client, load.acked_keys, OUR_QUEUE)
                row["batches"] = batch_sizes(queued_batches(client, OUR_QUEUE))
                row["wrapped"] = load.wrapped
                row["verification"] = "on (upload-post HMAC)" if signed else "off"
            elif c.name in ("C", "D"):
                row["check"] = {
                    "acknowledged": load.ok,
                    "in_redis": int(client.llen(f"bench-{c.name.lower()}")),
                }
            result[c.name] = row
            log(
                f"round {round_no} {c.name:>6}: {load.ok_per_s:8.0f} 2xx/s  "
                f"p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:7.1f} ms  "
                f"cpu/req {row['server_cpu_us_per_req']:5.1f} us (x{row['server_cpu_share']:.2f}, "
                f"sys {row['server_sys_share']:.0%}) "
                f"redis {row['redis_cpu_us_per_req']:4.1f} us  rss {rss.max_mb:5.1f} MB  "
                f"{load.statuses}"
            )
        rounds.append(result)
    return summarize_ingress(rounds, {c.name: c.what for c in every})


def summarize_ingress(
    rounds: list[dict[str, dict[str, Any]]], names: dict[str, str]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, what in names.items():
        rows = [r[name] for r in rounds]
        entry: dict[str, Any] = {
            "what": what,
            "ok_per_s": statistics.median(r["ok_per_s"] for r in rows),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "rss_max_mb": max(r["rss_max_mb"] for r in rows),
        }
        if "A" in names:
            entry["ratio_to_A"] = round(
                statistics.median(r[name]["ok_per_s"] / r["A"]["ok_per_s"] for r in rounds), 3
            )
            entry["p99_over_A_p99"] = round(
                statistics.median(r[name]["p99_ms"] / r["A"]["p99_ms"] for r in rounds), 2
            )
        summary[name] = entry
    return {"rounds": rounds, "median": summary}


# -- workers --------------------------------------------------------------------------------


def wait_ready(client: redis.Redis, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while not client.exists(READY_KEY):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"worker did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.5)  # let it reach its blocking read


def drain(
    client: redis.Redis,
    args_: list[str],
    env: dict[str, str],
    staging: str,
    queue: str,
    events: int,
    workdir: Path,
    label: str,
) -> dict[str, Any]:
    """Start a worker on ``queue``, move the staged backlog onto it, time until all is acked."""
    client.delete(READY_KEY, RUNS_KEY)
    log_path = workdir / f"worker-{label}.log"
    proc = spawn(args_, env, log_path)
    try:
        wait_ready(client, proc, log_path)
        pids = [proc.pid, *children(proc.pid)]
        t0 = time.perf_counter()
        client.rename(staging, queue)
        deadline = time.monotonic() + 600
        while client.llen(queue) or client.hlen("unacked"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {label} stopped draining; see {log_path}")
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
        rss = {str(p): round(rss_kb(p) / 1024, 1) for p in pids}
        # Handler runs reach Redis within 0.1 s (bench/probe.py); wait for the stragglers.
        settle = time.monotonic() + 5
        while int(client.get(RUNS_KEY) or 0) < events and time.monotonic() < settle:
            time.sleep(0.05)
    finally:
        stop(proc)
    runs = int(client.get(RUNS_KEY) or 0)
    return {
        "events": events,
        "seconds": round(elapsed, 3),
        "events_per_s": round(events / elapsed, 1),
        "handler_runs": runs,
        "rss_mb": rss,
    }


def retarget(client: redis.Redis, staging: str, queue: str) -> None:
    """Make the staged messages look published to ``queue`` (their routing key names the staging
    list), so that the worker sees exactly what a direct publish would have given it."""
    ready = staging + "-ready"
    raws: list[bytes] = client.lrange(staging, 0, -1)  # type: ignore[assignment]
    pipe = client.pipeline(transaction=False)
    for raw in reversed(raws):
        message = orjson.loads(raw)
        info = message["properties"]["delivery_info"]
        for name in ("exchange", "routing_key"):
            if info.get(name) == staging:
                info[name] = queue
        pipe.lpush(ready, orjson.dumps(message))
    pipe.delete(staging)
    pipe.rename(ready, staging)
    pipe.execute()


def stage_bare(client: redis.Redis, url: str, staging: str, events: int) -> None:
    """The backlog for the bare task: one Celery message per event.

    Celery publishes one message (``apply_async``, in a subprocess with the bench app); the others
    are copies of it with their own ids and event, which is what ``apply_async`` would write but
    ~50x faster to make (publishing 20,000 one by one took a minute on a busy machine).
    """
    code = "import sys\nfrom bench.celery_noop import noop\nnoop.apply_async(args=[sys.argv[1]])\n"
    env = base_env(url, BENCH_QUEUE=staging)
    first = make_body("bare0000000000000000").decode()
    subprocess.run([sys.executable, "-c", code, first], env=env, cwd=ROOT, check=True)
    template = orjson.loads(client.rpop(staging))  # type: ignore[arg-type]
    args, kwargs, embed = orjson.loads(base64.b64decode(template["body"]))
    assert args == [first], args
    pipe = client.pipeline(transaction=False)
    for i in range(events):
        body = make_body(f"bare{i:016d}").decode()
        task_id = str(uuid.uuid4())
        template["body"] = base64.b64encode(orjson.dumps([[body], kwargs, embed])).decode()
        template["headers"].update(id=task_id, root_id=task_id, argsrepr=repr([body]))
        template["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
        pipe.lpush(staging, orjson.dumps(template))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


def clear_worker_state(client: redis.Redis, keep: str) -> None:
    """Forget what the last drain wrote (markers, leases, counters, kombu's unacked set); the
    stored deliveries and the staged backlogs (``keep*``) stay. Then shrink the AOF."""
    patterns = [f"{PREFIX}:handled:*", f"{PREFIX}:lease:*", f"{PREFIX}:redelivered:*"]
    patterns += ["unacked*", "bench-*"]
    client.delete(READY_KEY, RUNS_KEY)
    for pattern in patterns:
        batch: list[bytes] = []
        for key in client.scan_iter(pattern, count=5000):
            if not key.decode().startswith(keep):
                batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
    client.bgrewriteaof()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)


async def _stage_ours(
    url: str, staging: str, events: int, batch_max: int, concurrency: int
) -> None:
    from receiver.enqueue import Enqueuer
    from uphooks.redis import async_client

    settings = Settings(
        redis_url=url, key_prefix=PREFIX, queue=staging, enqueue_batch_max=batch_max
    )
    client = async_client(settings)
    enqueuer = Enqueuer(client, settings)
    await enqueuer.start()
    tag = uuid.uuid4().hex[:8]
    counter = iter(range(events))
    headers = {"content-type": "application/json", "user-agent": "Upload-Post-Webhooks/1.0"}

    async def submitter() -> None:
        for i in counter:
            body = make_body(f"{tag}{i:012d}")
            key = f"e:{hashlib.sha256(body).hexdigest()[:40]}"
            record = orjson.dumps(
                {
                    "key": key,
                    "event": "upload_completed",
                    "received_at": time.time(),
                    "headers": headers,
                    "body": body.decode(),
                }
            )
            assert await enqueuer.submit(key, record)

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    await enqueuer.stop()
    await client.aclose()


def ingress_batch_size(report: dict[str, Any]) -> int:
    """The batch size group commit made under load in this run's ingress rounds: the backlog
    for our workers is staged with it, so they see what the ingress would hand them."""
    means = [
        row["batches"]["mean"]
        for r in report.get("ingress", {}).get("rounds", [])
        for name, row in r.items()
        if name == "ours" and row.get("batches")
    ]
    return round(statistics.median(means)) if means else Settings().enqueue_batch_max


def bench_workers(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    """Each backlog is staged once, then copied for each pool, so every drain gets the same."""
    results: dict[str, Any] = {}
    pools = {"prefork -c2": ["--pool", "prefork", "-c", "2"], "solo": ["--pool", "solo"]}
    bare_cmd = [sys.executable, "-m", "celery", "-A", "bench.celery_noop", "worker"]
    bare_cmd += [*WORKER_FLAGS, "--loglevel", "WARNING"]
    our_cmd = [sys.executable, "-m", "uphooks_cli", "worker", *WORKER_FLAGS]
    our_env = base_env(
        url,
        UPHOOKS_QUEUE=OUR_QUEUE,
        UPHOOKS_HANDLER_MODULES="bench.noop_handler",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
    )
    cases = [
        ("bare", "bare Celery no-op task, one event per message", args.events),
        ("ours", f"our worker, {args.worker_batch} events per message", args.events),
        ("ours-batch1", "our worker, one event per message", args.events_batch1),
    ]
    cases = [c for c in cases if c[0] in args.worker_cases]
    reset(client)
    staged: dict[str, dict[str, Any]] = {}
    for case, _, events in cases:
        template = f"{TEMPLATE}{case}"
        t0 = time.perf_counter()
        if case == "bare":
            stage_bare(client, url, template, events)
            staged[case] = {"messages": events}
            retarget(client, template, "bench-noop")
        else:
            batch_max = 1 if case == "ours-batch1" else args.worker_batch
            asyncio.run(_stage_ours(url, template, events, batch_max, args.connections))
            staged[case] = batch_sizes(queued_batches(client, template))
            retarget(client, template, OUR_QUEUE)
        staged[case]["staging_s"] = round(time.perf_counter() - t0, 2)
        log(f"staged {case}: {staged[case]}")
    for pool, pool_args in pools.items():
        for case, what, events in cases:
            clear_worker_state(client, keep=TEMPLATE)
            staging = f"bench-staging-{case}"
            client.copy(f"{TEMPLATE}{case}", staging)
            if case == "bare":
                cmd = [*bare_cmd, "-Q", "bench-noop", *pool_args]
                env, queue = base_env(url, BENCH_QUEUE="bench-noop"), "bench-noop"
            else:
                cmd, env, queue = [*our_cmd, *pool_args], our_env, OUR_QUEUE
            row = drain(client, cmd, env, staging, queue, events, workdir, f"{case}-{pool}")
            row["what"] = what
            row["staged"] = staged[case]
            if case != "bare":
                row["done_markers"] = count_done(client)
            ok = row["handler_runs"] == events and row.get("done_markers", events) == events
            row["each_event_once"] = ok
            results[f"{case} / {pool}"] = row
            log(
                f"workers {case:>11} {pool:<11}: {row['events_per_s']:8.0f} events/s "
                f"({events} in {row['seconds']} s)  runs {row['handler_runs']}  "
                f"markers {row.get('done_markers', '-')}"
            )
    for pool in pools:
        bare = results.get(f"bare / {pool}")
        for case in ("ours", "ours-batch1"):
            ours = results.get(f"{case} / {pool}")
            if bare and ours:
                ours["ratio_to_bare"] = round(ours["events_per_s"] / bare["events_per_s"], 2)
    return results


def count_done(client: redis.Redis) -> int:
    done = 0
    keys = list(client.scan_iter(f"{PREFIX}:handled:*", count=5000))
    for start in range(0, len(keys), 5000):
        pipe = client.pipeline(transaction=False)
        for key in keys[start : start + 5000]:
            pipe.hget(key, "bench.noop")
        done += sum(1 for v in pipe.execute() if v == b"done")
    return done


# -- soak -----------------------------------------------------------------------------------


def soak(args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path) -> dict[str, Any]:
    """Ingress under load and a worker draining beside it for ``--soak`` seconds: RSS over time."""
    reset(client)
    verify = verification_env()
    requests_file = workdir / "requests-soak.txt"
    # Enough distinct deliveries that the worker has fresh work to the end (2,600-5,300/s here).
    lines = int(args.soak * args.soak_rate)
    write_requests(requests_file, uuid.uuid4().hex[:8], lines, bool(verify))
    env = base_env(url, UPHOOKS_QUEUE=OUR_QUEUE, **verify)
    worker_env = base_env(
        url,
        UPHOOKS_QUEUE=OUR_QUEUE,
        UPHOOKS_HANDLER_MODULES="bench.noop_handler",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
    )
    worker_cmd = [sys.executable, "-m", "uphooks_cli", "worker", *WORKER_FLAGS, "-c", "2"]
    client.delete(READY_KEY)
    client.config_resetstat()  # LPUSH calls (scripts' included) = Celery messages our ingress made
    worker = spawn(worker_cmd, worker_env, workdir / "worker-soak.log")
    try:
        wait_ready(client, worker, workdir / "worker-soak.log")
        with (
            uvicorn_server("receiver.app:app", env, workdir) as (server_url, proc),
            Sampler(proc.pid, 2.0) as ingress_rss,
            Sampler(worker.pid, 2.0) as worker_rss,
        ):
            load = run_load(
                server_url, requests_file, args.soak, args.connections, args.threads, workdir
            )
    finally:
        stop(worker)

    def series(
        sampler: Sampler, pick: Callable[[tuple[float, int, list[int]]], int]
    ) -> dict[str, Any]:
        points = [(round(t, 1), round(pick(s) / 1024, 1)) for s in sampler.samples for t in [s[0]]]
        # Growth: the last quarter against the second quarter (the first is warm-up).
        q = max(1, len(points) // 4)
        early = statistics.median(p[1] for p in points[q : 2 * q])
        late = statistics.median(p[1] for p in points[-q:])
        return {
            "mb": points,
            "early_mb": early,
            "late_mb": late,
            "growth_mb": round(late - early, 1),
        }

    stats = client.info("commandstats")
    messages = int(stats.get("cmdstat_lpush", {}).get("calls", 0))
    out = {
        "seconds": args.soak,
        "celery_messages": messages,
        "ok_per_s": round(load.ok_per_s, 1),
        "statuses": load.statuses,
        "wrapped": load.wrapped,
        "ingress": series(ingress_rss, lambda s: s[1]),
        "worker_main": series(worker_rss, lambda s: s[1]),
        "worker_children": series(worker_rss, lambda s: sum(s[2])),
    }
    main = out["worker_main"]["mb"]
    out["worker_main_kb_per_message"] = round(
        (main[-1][1] - main[0][1]) * 1024 / max(messages, 1), 2
    )
    out["bare_worker_main"] = bare_main_growth(client, url, workdir, args.soak_bare_messages)
    for name in ("ingress", "worker_main", "worker_children"):
        row = out[name]
        log(
            f"soak {name:<16}: {row['early_mb']:6.1f} MB -> {row['late_mb']:6.1f} MB "
            f"(growth {row['growth_mb']:+.1f} MB)"
        )
    log(
        f"soak worker main: {out['worker_main_kb_per_message']} kB per Celery message "
        f"({messages} messages); bare Celery's main: {out['bare_worker_main']}"
    )
    return out


def bare_main_growth(client: redis.Redis, url: str, workdir: Path, messages: int) -> dict[str, Any]:
    """The same question for the bare Celery worker: how its prefork parent's RSS moves with
    the number of messages it handed to its pool (to tell Celery's growth from ours)."""
    if not messages:
        return {}
    reset(client)
    stage_bare(client, url, "bench-soak-stage", messages)
    retarget(client, "bench-soak-stage", "bench-noop")
    cmd = [sys.executable, "-m", "celery", "-A", "bench.celery_noop", "worker", *WORKER_FLAGS]
    cmd += ["--loglevel", "WARNING", "-Q", "bench-noop", "--pool", "prefork", "-c", "2"]
    client.delete(READY_KEY)
    log_path = workdir / "worker-soak-bare.log"
    proc = spawn(cmd, base_env(url, BENCH_QUEUE="bench-noop"), log_path)
    try:
        wait_ready(client, proc, log_path)
        before = rss_kb(proc.pid)
        client.rename("bench-soak-stage", "bench-noop")
        deadline = time.monotonic() + 300
        while client.llen("bench-noop") or client.hlen("unacked"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"bare worker stopped draining; see {log_path}")
            time.sleep(0.05)
        after = rss_kb(proc.pid)
    finally:
        stop(proc)
    return {
        "messages": messages,
        "before_mb": round(before / 1024, 1),
        "after_mb": round(after / 1024, 1),
        "kb_per_message": round((after - before) / messages, 2),
    }


# -- report ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_version = subprocess.run(
        [find_redis_server(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "redis": redis_version,
        "wrk": shutil.which("wrk") or "absent",
    }


def print_tables(report: dict[str, Any]) -> None:
    ingress = report.get("ingress")
    if ingress:
        print("\nIngress (median of rounds; ratios taken within each round)")
        print(
            f"{'':6}{'2xx/s':>10}{'x A':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99/A':>7}"
            f"{'RSS MB':>8}  what"
        )
        for name, row in ingress["median"].items():
            print(
                f"{name:6}{row['ok_per_s']:10.0f}{row.get('ratio_to_A', 0):8.2f}"
                f"{row['p50_ms']:9.1f}{row['p99_ms']:9.1f}{row.get('p99_over_A_p99', 0):7.2f}"
                f"{row['rss_max_mb']:8.1f}  {row['what']}"
            )
        for r in ingress["rounds"]:
            if "ours" in r:
                print(f"  ours: {r['ours']['check']}, batches {r['ours']['batches']}")
    workers = report.get("workers")
    if workers:
        print("\nWorkers (backlog drained, start-up excluded)")
        print(f"{'':26}{'events/s':>10}{'x bare':>8}{'once':>6}  RSS MB per process")
        for name, row in workers.items():
            print(
                f"{name:26}{row['events_per_s']:10.0f}{row.get('ratio_to_bare', 1.0):8.2f}"
                f"{'yes' if row['each_event_once'] else 'NO':>6}  {list(row['rss_mb'].values())}"
            )
    goals = report.get("goals")
    if goals:
        print("\nGoals")
        for goal, (met, detail) in goals.items():
            print(f"  {'MET ' if met else 'MISSED'} {goal}: {detail}")


def goals(report: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    ingress = report.get("ingress", {}).get("median", {})
    ours = ingress.get("ours")
    if ours and "ratio_to_A" in ours:
        out["ingress >= 0.6 x A"] = (ours["ratio_to_A"] >= 0.6, f"{ours['ratio_to_A']:.2f} x A")
        out["ingress p99 <= 2 x A's p99"] = (
            ours["p99_over_A_p99"] <= 2,
            f"{ours['p99_over_A_p99']:.2f} x A's p99",
        )
        checks = [r["ours"]["check"] for r in report["ingress"]["rounds"]]
        all_in = all(c["enqueued_over_acknowledged"] == 1.0 for c in checks)
        found = sum(c["acknowledged_found_in_redis"] for c in checks)
        acked = sum(c["acknowledged"] for c in checks)
        twice = sum(c["keys_queued_more_than_once"] for c in checks)
        detail = f"{found}/{acked} acknowledged keys found (record, index, queued); {twice} twice"
        out["every acknowledged delivery in Redis"] = (all_in and twice == 0, detail)
    workers = report.get("workers", {})
    for pool in ("prefork -c2", "solo"):
        row = workers.get(f"ours / {pool}")
        if row and "ratio_to_bare" in row:
            out[f"workers ({pool}) >= 3 x bare Celery"] = (
                row["ratio_to_bare"] >= 3,
                f"{row['ratio_to_bare']:.2f} x",
            )
    if workers:
        out["every drained event took effect once"] = (
            all(r["each_event_once"] for r in workers.values()),
            ", ".join(f"{k}: {r['handler_runs']}/{r['events']}" for k, r in workers.items()),
        )
    soak_ = report.get("soak")
    if soak_:
        # Growth from the second quarter of the run (after warm-up) to the last one.
        for name in ("ingress", "worker_main", "worker_children"):
            row = soak_[name]
            out[f"no RSS growth over the soak: {name}"] = (
                row["growth_mb"] < 1.0,
                f"{row['early_mb']} MB -> {row['late_mb']} MB in {soak_['seconds']:.0f} s",
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-rate", type=float, default=15000, help="unique requests per second")
    parser.add_argument("--only", default="A0,A,C,D,ours", help="ingress contenders, or 'none'")
    parser.add_argument("--events", type=int, default=20000, help="worker backlog")
    parser.add_argument("--events-batch1", type=int, default=5000)
    parser.add_argument(
        "--worker-batch",
        type=int,
        default=0,
        help="events per message in our worker's backlog (default: the mean batch our ingress "
        "made under load in this run, else UPHOOKS_ENQUEUE_BATCH_MAX)",
    )
    parser.add_argument("--worker-cases", default="bare,ours,ours-batch1", help="or 'none'")
    parser.add_argument("--soak", type=float, default=0, help="seconds of the RSS soak (0: none)")
    parser.add_argument(
        "--soak-bare-messages",
        type=int,
        default=15000,
        help="messages the bare Celery worker drains in the soak, for its memory (0: skip)",
    )
    parser.add_argument(
        "--soak-rate", type=float, default=6000, help="distinct deliveries per soak second"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=PATH[?VAR=VALUE&...]",
        help="also run our ingress from another source tree and/or with other settings "
        "(to measure a proposed change)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.only = [x for x in args.only.split(",") if x in CONTENDERS]
    args.worker_cases = args.worker_cases.split(",")

    if not shutil.which("wrk"):
        print(
            "wrk is not installed: install it with `sudo apt-get install -y wrk` (Debian/Ubuntu) "
            "or "
            "`brew install wrk` (macOS). Falling back to bench/loadgen.py, a Python load "
            "generator: its figures are limited by the generator itself and are NOT comparable.",
            file=sys.stderr,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(), "settings": vars(args) | {"out": None}}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="uphooks-bench-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()  # appendfsync always, for everyone
        client = redis.Redis.from_url(server.url)
        report["machine"]["redis_appendfsync"] = server.appendfsync
        try:
            if args.only or args.variant:
                report["ingress"] = bench_ingress(args, client, server.url, workdir)
            if not args.worker_batch:
                args.worker_batch = ingress_batch_size(report)
            report["settings"]["worker_batch"] = args.worker_batch
            if args.worker_cases != ["none"]:
                report["workers"] = bench_workers(args, client, server.url, workdir)
            if args.soak:
                report["soak"] = soak(args, client, server.url, workdir)
        finally:
            client.close()
            server.stop()
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["goals"] = goals(report)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    out = args.out or RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    (RESULTS / "latest.json").write_bytes(out.read_bytes())
    print_tables(report)
    print(f"\nJSON: {out}  ({report['elapsed_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
