"""The system under test, as separate processes: redis-server, the ingress, Celery workers.

Each process is started by the harness (harness/: its own session, so its process group holds a
worker's pool children too) with the pipeline's settings as ``UPHOOKS_*`` variables, validated by
``Settings`` first. Logs go to the scenario's folder, where the report points when something
failed.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from chaos.effects import EffectStore
from chaos.handler import HANDLER
from chaos.holds import Holds
from harness import commands, procfs, procs, wait
from harness.env import pipeline_env
from harness.redis import RedisServer, free_port
from uphooks.keys import Keys
from uphooks.settings import Settings

#: Re-exported for the scenarios: the live children of a process, and a process's parent.
children_of = procfs.children
parent_of = procfs.parent_of

#: The timings every scenario runs with: short enough that a dead worker's pairs come back
#: within seconds (a lapsed lease) and a lost message within ``recover_after_seconds`` (5 s,
#: 10 min by default), so recovery happens inside a run.
TIMINGS = {
    "visibility_timeout_seconds": 10,
    "restore_sweep_seconds": 1,
    "task_time_limit_seconds": 5,
    "task_soft_time_limit_seconds": 4,
    "retry_base_delay_seconds": 0.2,
    "retry_max_delay_seconds": 1.0,
    "poison_max_deliveries": 3,
    "ack_timeout_seconds": 3.0,
    "worker_concurrency": 2,
    "lease_seconds": 3,
    "schedule_interval_seconds": 0.5,
    "recover_after_seconds": 5,
}


#: The signing secret the load client signs with, as the sender does (whsec_ + base64).
SECRET = "whsec_" + base64.b64encode(b"chaos-harness-signing-secret-32b").decode()


def pipeline_values(**overrides: object) -> dict[str, object]:
    """Every setting the harness gives the pipeline (``Settings`` field names)."""
    return {
        **TIMINGS,
        "handler_modules": "chaos.handler",
        "builtin_log_handler": False,
        "log_level": "INFO",
        "verify": "upload-post",
        "secrets": SECRET,
        **overrides,
    }


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    popen: procs.Popen = field(init=False)
    #: Restarted by the cluster's supervisor when it exits unasked (workers only).
    supervised: bool = False
    crashes: list[str] = field(default_factory=list)

    def spawn(self) -> Proc:
        self.popen = procs.spawn(self.args, self.env, self.log)
        return self

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, sig: int) -> None:
        procs.signal_group(self.popen, sig)

    def log_lines(self, *needles: str) -> list[str]:
        """Log lines containing any of ``needles``, one short line each (JSON lines condensed)."""
        if not self.log.exists():
            return []
        text = self.log.read_text(errors="replace").splitlines()
        return [condensed(line) for line in text if any(n in line for n in needles)]


def condensed(line: str, width: int = 300) -> str:
    if line.startswith("{"):
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            line = f"{rec.get('ts')} {rec.get('level')} {rec.get('logger')}: {rec.get('msg')}"
    return line if len(line) <= width else line[: width - 3] + "..."


def read_aof(path: Path) -> list[list[bytes]]:
    """The commands of an append-only file (RESP arrays of bulk strings)."""
    data, i, out = path.read_bytes(), 0, []
    while i < len(data) and data[i : i + 1] == b"*":
        j = data.index(b"\r\n", i)
        count, i = int(data[i + 1 : j]), j + 2
        args = []
        for _ in range(count):
            j = data.index(b"\r\n", i)
            size, i = int(data[i + 1 : j]), j + 2
            args.append(data[i : i + size])
            i += size + 2
        out.append(args)
    return out


@dataclass
class Cluster:
    """One scenario's Redis, ingress, workers and effect store, all in ``root``."""

    root: Path
    overrides: dict[str, object] = field(default_factory=dict)
    appendfsync: str = "always"
    redis_server: RedisServer | None = None
    procs: list[Proc] = field(default_factory=list)
    prefix: str = field(default_factory=lambda: f"chaos{uuid.uuid4().hex[:6]}")

    def __post_init__(self) -> None:
        values = pipeline_values(key_prefix=self.prefix, queue=f"{self.prefix}-q", **self.overrides)
        # Validated here, so settings that do not fit fail the scenario before anything starts.
        self.settings = Settings.model_validate(values)
        self.pipeline_values = values
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = EffectStore(self.root / "effects.db").create()
        self.holds = Holds(self.root).create()
        self.keys = Keys(self.prefix)
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)

    def supervise(self) -> None:
        self._supervisor.start()

    # -- Redis ---------------------------------------------------------------------------------
    def start_redis(self) -> RedisServer:
        if self.redis_server is None:
            self.redis_server = RedisServer(self.root / "redis", appendfsync=self.appendfsync)
        return self.redis_server.start()

    @property
    def redis_url(self) -> str:
        assert self.redis_server is not None, "start_redis() first"
        return self.redis_server.url

    def client(self, timeout: float = 5.0) -> redis.Redis:
        return redis.Redis.from_url(
            self.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def locate(self, key: str) -> str:
        """Where a delivery is, for a lost one's evidence: its record, markers and messages."""
        with self.client() as r:
            record = r.exists(self.keys.delivery(key))
            marks = r.hgetall(self.keys.handled(key))
            queued = sum(key.encode() in m for m in r.lrange(self.settings.queue, 0, -1))
            unacked = sum(key.encode() in m for m in r.hvals("unacked"))
        handled = {k.decode(): v.decode()[:80] for k, v in marks.items()}
        return (
            f"{key}: record={'yes' if record else 'no'} handled={handled} "
            f"in queue={queued} in unacked={unacked}"
        )

    def aof_trail(self, key: str) -> str:
        """What Redis's append-only file says happened to the message naming ``key``."""
        commands = [
            c
            for path in sorted((self.root / "redis").glob("**/*.incr.aof"))
            for c in read_aof(path)
        ]
        pushed = [
            i for i, c in enumerate(commands) if c[0].upper() == b"LPUSH" and key.encode() in c[2]
        ]
        if not pushed:
            return f"{key}: no LPUSH of a message naming it in the AOF"
        i = pushed[-1]
        props = json.loads(commands[i][2])["properties"]
        tag = props["delivery_tag"].encode()
        queue = commands[i][1]
        popped = next(
            (
                j
                for j in range(i + 1, len(commands))
                if commands[j][0].upper() in (b"RPOP", b"BRPOP") and commands[j][1] == queue
            ),
            None,
        )
        unacked = [
            j
            for j, c in enumerate(commands)
            if c[0].upper() == b"HSET" and c[1] == b"unacked" and c[2] == tag
        ]
        return (
            f"AOF: message (delivery tag {tag.decode()}) pushed at command {i}; next pop of "
            f"its queue at command {popped}; recorded in kombu's unacked hash: "
            f"{'at ' + str(unacked) if unacked else 'never'}"
        )

    def schedule_size(self) -> int:
        """Items waiting in the ledger's schedule (``<prefix>:due``)."""
        with self.client() as r:
            return int(r.zcard(self.keys.due))

    def dead_lettered(self) -> set[str]:
        """Delivery keys with a dead letter for the counting handler."""
        with self.client() as r:
            members: list[bytes] = r.zrange(self.keys.dlq_index, 0, -1)
        suffix = f"|{HANDLER}"
        return {m.decode().removesuffix(suffix) for m in members if m.decode().endswith(suffix)}

    # -- processes -------------------------------------------------------------------------------
    def env(self, redis_url: str | None = None) -> dict[str, str]:
        return pipeline_env(
            redis_url or self.redis_url,
            self.pipeline_values,
            {
                "CHAOS_DIR": str(self.root),
                # Up to 1,000 load connections come from one address; the edge's caps are
                # tests/test_edge.py's subject, not this one's. No admin listener needed.
                "UPHOOKS_MAX_CONNECTIONS": "4096",
                "UPHOOKS_MAX_CONNECTIONS_PER_SOURCE": "4096",
                "UPHOOKS_ADMIN_PORT": "0",
            },
        )

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, args, env, self.root / f"{name}.log").spawn()
        self.procs.append(proc)
        return proc

    def ingress(self, redis_url: str | None = None, name: str = "ingress") -> tuple[str, Proc]:
        port = free_port()
        proc = self._spawn(name, commands.serve(port), self.env(redis_url))
        wait.until_listening(proc.popen, port, proc.log, what=name)
        return f"http://127.0.0.1:{port}", proc

    def worker(self, name: str, redis_url: str | None = None, *, wait: bool = True) -> Proc:
        args = commands.worker(name=f"{name}-{self.prefix}")
        proc = self._spawn(name, args, self.env(redis_url))
        proc.supervised = True
        if wait:
            wait_ready(proc)
        return proc

    def _supervise(self) -> None:
        """Like systemd's Restart=always: a worker that exits unasked is started again (after
        1 s), and its last error lines are kept as evidence. Scenarios fail on any crash."""
        while not self._stopping.wait(0.5):
            for proc in self.procs:
                if proc.supervised and not proc.alive():
                    proc.signal_group(signal.SIGKILL)  # orphaned pool children
                    lines = proc.log_lines("CRITICAL", "Unrecoverable")[-2:]
                    proc.crashes.append(
                        f"{proc.name} (pid {proc.pid}) exited with {proc.popen.returncode} "
                        f"at {time.strftime('%H:%M:%S')}: " + " | ".join(lines)
                    )
                    time.sleep(1)
                    proc.spawn()

    def crashes(self) -> list[str]:
        return [c for p in self.procs for c in p.crashes]

    def stop(self) -> None:
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(10)
        for proc in self.procs:
            if proc.alive():
                proc.signal_group(signal.SIGKILL)
            # Pool children outlive a dead parent; the group signal reaches them too.
            proc.signal_group(signal.SIGKILL)
            proc.popen.wait()
        if self.redis_server is not None:
            self.redis_server.stop()
        self.store.close()


def wait_ready(proc: Proc, timeout: float = 45) -> None:
    wait.until_logged(proc.popen, proc.log, timeout=timeout)
