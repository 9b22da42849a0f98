"""A replicated Redis for tests, chaos and bench: a master, replicas and sentinels on 127.0.0.1.

Each sentinel is ``redis-server sentinel.conf --sentinel`` (Debian ships no ``redis-sentinel``),
with its own config file it may rewrite, on a free port. The timings are short so a failover
happens within a few seconds of the master's death (``down_after_ms`` + an election).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from uphooks_cli.embedded import RedisServer, find_redis_server, free_port, stop_process

MASTER_NAME = "uphooks"


class ReplicaServer(RedisServer):
    """A RedisServer that starts as a replica of ``master_port``."""

    def __init__(self, data_dir: Path, master_port: int, appendfsync: str = "always") -> None:
        super().__init__(data_dir, appendfsync=appendfsync)
        self.master_port = master_port

    def command(self) -> list[str]:
        return [*super().command(), "--replicaof", "127.0.0.1", str(self.master_port)]


@dataclass
class SentinelProc:
    port: int
    conf: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [find_redis_server(), str(self.conf), "--sentinel"], stdout=subprocess.DEVNULL
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class ReplicatedRedis:
    """``start()`` a master, ``replicas`` replicas and ``sentinels`` sentinels (quorum 2)."""

    root: Path
    replicas: int = 1
    sentinels: int = 3
    down_after_ms: int = 1000
    failover_timeout_ms: int = 4000
    appendfsync: str = "always"
    master: RedisServer = field(init=False)
    replica_servers: list[RedisServer] = field(default_factory=list)
    sentinel_procs: list[SentinelProc] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.master = RedisServer(self.root / "master", appendfsync=self.appendfsync)

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinel_procs]

    @property
    def sentinel_url(self) -> str:
        """kombu's form, as a user would write it: ``sentinel://h:p;sentinel://h:p/0``."""
        joined = ";".join(f"sentinel://{a}" for a in self.sentinel_addresses)
        return f"{joined}/0?master_name={MASTER_NAME}"

    def start(self, timeout: float = 20.0) -> ReplicatedRedis:
        self.master.start()
        for i in range(self.replicas):
            replica = ReplicaServer(self.root / f"replica{i}", self.master.port, self.appendfsync)
            self.replica_servers.append(replica.start())
        for i in range(self.sentinels):
            port = free_port()
            folder = self.root / f"sentinel{i}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                "\n".join(
                    [
                        f"port {port}",
                        "bind 127.0.0.1",
                        f"dir {folder}",
                        f"logfile {folder / 'sentinel.log'}",
                        f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
                        f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                        f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}",
                        f"sentinel parallel-syncs {MASTER_NAME} 1",
                        "",
                    ]
                ),
                encoding="utf-8",
            )
            proc = SentinelProc(port, conf)
            proc.start()
            self.sentinel_procs.append(proc)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        """Until every replica is in sync and every sentinel sees the others and the replicas."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the replicated Redis did not come up; see {self.root}")

    def _ready(self) -> bool:
        try:
            with redis.Redis(port=self.master.port, socket_timeout=1) as m:
                info = m.info("replication")
            online = sum(
                1
                for k, v in info.items()
                if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
            )
            if online < self.replicas:
                return False
            for s in self.sentinel_procs:
                with redis.Redis(port=s.port, socket_timeout=1) as c:
                    fields = c.sentinel_master(MASTER_NAME)
                    if int(fields["num-other-sentinels"]) < self.sentinels - 1:
                        return False
                    if int(fields["num-slaves"]) < self.replicas:
                        return False
        except (redis.RedisError, OSError, KeyError):
            return False
        return True

    def master_port(self) -> int | None:
        """Where the sentinels say the master is now (None if none answers)."""
        for s in self.sentinel_procs:
            with (
                contextlib.suppress(redis.RedisError, OSError),
                redis.Redis(port=s.port, socket_timeout=1) as c,
            ):
                addr = c.sentinel_get_master_addr_by_name(MASTER_NAME)
                if addr:
                    return int(addr[1])
        return None

    def server_on(self, port: int) -> RedisServer:
        for server in (self.master, *self.replica_servers):
            if server.port == port:
                return server
        raise KeyError(port)

    def stop(self) -> None:
        for s in self.sentinel_procs:
            s.stop()
        for server in (*self.replica_servers, self.master):
            server.stop()
