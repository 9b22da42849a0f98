"""The ingress beside its baselines, in interleaved rounds (issue 14, goal 5).

Contenders (bench/apps.py for the baselines), each in its own processes, under wrk with the same
Lua script (bench/wrk.lua) and the same kind of 600-byte ``upload_completed`` bodies:

- ``A0``, ``A``, ``C``, ``D``: the baselines under uvicorn (one process, uvloop, httptools, no
  access log);
- ``ours``: the Procfile's ``web`` command as shipped, ``uphooks serve`` (one process, our
  protocol, the access log at INFO as JSON lines into a file, the admin listener), with signature
  verification on (``upload-post`` with a ``whsec_`` secret: both key readings are tried);
- ``ours-w2``: the same with ``--workers 2``;
- ``--variant LABEL=[module:factory@]PATH[?VAR=VALUE&...]``: our app from another source tree
  and/or with other settings, under uvicorn like the baselines (to take costs apart), or
  ``LABEL=serve@PATH``: ``uphooks serve`` from that tree (a before/after of the whole ingress).

Medians of the rounds; ratios to A taken round by round. After each run of ours, every key it
acknowledged is looked up in Redis (record, events index, one queued Celery message).
"""

from __future__ import annotations

import argparse
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.bodies import verification_env, write_requests
from bench.checks import batch_sizes, check_acked, queued_batches, reset
from bench.common import OUR_QUEUE, base_env, log
from bench.load import run_load
from bench.sampler import Sampler
from bench.servers import UVICORN_FLAGS, running
from harness import commands, procfs
from harness.procs import ROOT
from harness.redis import free_port

#: name -> (what runs: an app factory, or "serve" for the Procfile command; what it is)
CONTENDERS: dict[str, tuple[str, str]] = {
    "A0": ("bench.apps:a0", "raw ASGI callable answering 202"),
    "A": ("bench.apps:a", "Starlette route answering 202, body unread"),
    "C": ("bench.apps:c", "read body, parse, pydantic-validate, await redis.asyncio LPUSH"),
    "D": ("bench.apps:d", "read body, parse, pydantic-validate, task.delay() in the endpoint"),
    "M": ("bench.apps:m", "floor: read body, check HMAC, group-committed LPUSH, empty 202"),
    "ours": ("serve", "uphooks serve (Procfile): verify, de-duplicate, enqueue, access log"),
    "ours-w2": ("serve --workers 2", "uphooks serve --workers 2, the same"),
}


@dataclass
class Contender:
    name: str
    target: str
    what: str
    root: Path = ROOT  # another source tree: a variant of our ingress (--variant)
    env: dict[str, str] = field(default_factory=dict)  # extra variables for this contender
    ours: bool = False

    def command(self) -> Callable[[int], list[str]]:
        if self.target.startswith("serve"):
            extra = self.target.split()[1:]
            # A tree from before uphooks_cli/ (a --variant) has the command in uphooks.cli.
            module = "uphooks_cli" if (self.root / "uphooks_cli").is_dir() else "uphooks.cli"
            return lambda port: commands.serve(port, *extra, module=module)
        return lambda port: commands.uvicorn(self.target, port, *UVICORN_FLAGS)


def contenders(args: argparse.Namespace) -> list[Contender]:
    out = [
        Contender(n, *CONTENDERS[n], ours=n.startswith("ours"))
        for n in CONTENDERS
        if n in args.only
    ]
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        root, _, query = rest.partition("?")
        target = "receiver.app:app"
        if "@" in root:
            target, _, root = root.partition("@")
        env = dict(pair.split("=", 1) for pair in query.split("&") if pair)
        what = f"{target} from {root}" + (f" with {query}" if query else "")
        ours = target == "receiver.app:app" or target.startswith("serve")
        out.append(Contender(label, target, what, Path(root or ROOT).resolve(), env, ours))
    return out


def contender_env(c: Contender, url: str) -> dict[str, str]:
    env = base_env(url, BENCH_QUEUE=f"bench-{c.name.lower()}", UPHOOKS_QUEUE=OUR_QUEUE)
    env["PYTHONPATH"] = str(c.root)
    if c.ours:
        env.update(verification_env())
    if c.target.startswith("serve"):
        # As shipped: the default log level (INFO: one access line per request), the admin
        # listener on a port of its own.
        del env["UPHOOKS_LOG_LEVEL"]
        env["UPHOOKS_ADMIN_PORT"] = str(free_port())
    env.update(c.env)
    return env


def bench_ingress(
    args: argparse.Namespace, client: redis.Redis, url: str, workdir: Path
) -> dict[str, Any]:
    signed = bool(verification_env())
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
            main_file = warm = small
            if c.ours:
                tag = uuid.uuid4().hex[:8]
                warm = workdir / "requests-warm.txt"
                write_requests(warm, "w" + tag[:7], int(args.warmup * args.max_rate), signed)
                main_file = workdir / "requests-main.txt"
                write_requests(main_file, tag, lines, signed)
            env = contender_env(c, url)
            with running(c.command(), env, workdir, c.name) as (server_url, proc):
                run_load(server_url, warm, args.warmup, args.connections, args.threads, workdir)
                group = {proc.pid}  # its own session: the group holds uvicorn's processes too
                cpu0, rcpu0 = procfs.group_cpu_seconds(group), redis_cpu_seconds(client)
                with Sampler(proc.pid) as rss:
                    load = run_load(
                        server_url,
                        main_file,
                        args.duration,
                        args.connections,
                        args.threads,
                        workdir,
                    )
                cpu = procfs.group_cpu_seconds(group) - cpu0
                rcpu = redis_cpu_seconds(client) - rcpu0
            row: dict[str, Any] = {
                "ok_per_s": round(load.ok_per_s, 1),
                # Where the two cores went: CPU per answered request, server and Redis.
                "server_cpu_us_per_req": round(cpu / max(load.requests, 1) * 1e6, 1),
                "server_cpu_share": round(cpu / load.seconds, 2),
                "redis_cpu_us_per_req": round(rcpu / max(load.requests, 1) * 1e6, 1),
                "p50_ms": load.p50_ms,
                "p99_ms": load.p99_ms,
                "statuses": load.statuses,
                "errors": load.errors,
                # The process and its children (uvicorn's workers with --workers 2), summed.
                "rss_max_mb": round(
                    max((s[1] + sum(s[2]) for s in rss.samples), default=0) / 1024, 1
                ),
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
                f"round {round_no} {c.name:>7}: {load.ok_per_s:8.0f} 2xx/s  "
                f"p50 {load.p50_ms:6.1f} ms  p99 {load.p99_ms:7.1f} ms  "
                f"cpu/req {row['server_cpu_us_per_req']:5.1f} us (x{row['server_cpu_share']:.2f}) "
                f"redis {row['redis_cpu_us_per_req']:4.1f} us  rss {row['rss_max_mb']:5.1f} MB  "
                f"{load.statuses}"
            )
        rounds.append(result)
    return summarize(rounds, {c.name: c.what for c in every})


def redis_cpu_seconds(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def summarize(rounds: list[dict[str, dict[str, Any]]], names: dict[str, str]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, what in names.items():
        rows = [r[name] for r in rounds]
        entry: dict[str, Any] = {
            "what": what,
            "ok_per_s": statistics.median(r["ok_per_s"] for r in rows),
            "p50_ms": statistics.median(r["p50_ms"] for r in rows),
            "p99_ms": statistics.median(r["p99_ms"] for r in rows),
            "server_cpu_us_per_req": statistics.median(r["server_cpu_us_per_req"] for r in rows),
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
