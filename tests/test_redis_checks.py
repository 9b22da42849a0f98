"""uphooks/redis_checks.py against real Redis servers configured well and badly."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
import yaml

from tests.conftest import ROOT
from uphooks.redis_checks import (
    Finding,
    ServerFacts,
    assess,
    check_redis,
    check_redis_async,
    read_facts,
)
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer, free_port


def _settings(**overrides: object) -> Settings:
    return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]


def _warnings(findings: list[Finding]) -> dict[str, Finding]:
    return {f.setting: f for f in findings if f.level >= logging.WARNING}


def _by_setting(findings: list[Finding]) -> dict[str, Finding]:
    return {f.setting: f for f in findings}


class _Server(RedisServer):
    """A RedisServer with extra command-line settings."""

    def __init__(self, data_dir: Path, *extra: str, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)
        self.extra = list(extra)

    def command(self) -> list[str]:
        return [*super().command(), *self.extra]


StartServer = Callable[..., redis.Redis]


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[StartServer]:
    """Start Redis servers with extra settings; each is stopped after the test."""
    started: list[RedisServer] = []

    def start(*extra: str, port: int | None = None) -> redis.Redis:
        server = _Server(tmp_path / f"redis{len(started)}", *extra, port=port).start()
        started.append(server)
        return redis.Redis(port=server.port)

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def test_the_embedded_durable_server_has_no_warning_and_names_the_missing_memory_bound(
    own_redis: RedisServer,
) -> None:
    client = redis.Redis(port=own_redis.port)
    findings = check_redis(client, _settings())
    assert _warnings(findings) == {}
    assert [f.setting for f in findings] == ["maxmemory"]
    assert findings[0].level == logging.INFO

    client.config_set("maxmemory", 512 * 1024 * 1024)
    assert check_redis(client, _settings()) == []


def test_every_dangerous_setting_is_a_warning_that_names_its_risk(own_redis: RedisServer) -> None:
    client = redis.Redis(port=own_redis.port)
    client.config_set("appendonly", "no")
    client.config_set("maxmemory-policy", "allkeys-lru")

    warnings = _warnings(check_redis(client, _settings()))
    assert set(warnings) == {"appendonly", "maxmemory-policy"}
    assert str(warnings["appendonly"]).startswith("redis appendonly=no: ")
    assert "restart or crash" in warnings["appendonly"].risk
    assert "no snapshots either" in warnings["appendonly"].risk  # the test server takes none
    assert "noeviction" in warnings["maxmemory-policy"].risk
    assert "allkeys-lru" in str(warnings["maxmemory-policy"])


def test_appendfsync_no_is_a_warning_and_everysec_a_note(own_redis: RedisServer) -> None:
    client = redis.Redis(port=own_redis.port)
    client.config_set("appendfsync", "no")
    finding = _by_setting(check_redis(client, _settings()))["appendfsync"]
    assert finding.level == logging.WARNING and "host crash" in finding.risk

    client.config_set("appendfsync", "everysec")
    finding = _by_setting(check_redis(client, _settings()))["appendfsync"]
    assert finding.level == logging.INFO and "~1 s" in finding.risk


def test_a_nearly_full_redis_is_a_warning(own_redis: RedisServer) -> None:
    client = redis.Redis(port=own_redis.port)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", int(used * 1.05))
    finding = _warnings(check_redis(client, _settings()))["maxmemory"]
    assert "503" in finding.risk
    assert finding.risk.split("%")[0].isdigit()


def test_a_replica_is_a_warning(own_redis: RedisServer, server_with: StartServer) -> None:
    replica = server_with()
    replica.replicaof("127.0.0.1", own_redis.port)
    warning = _warnings(check_redis(replica, _settings()))["role"]
    assert "read-only replica" in warning.risk


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def test_redis_cluster_is_a_warning(server_with: StartServer) -> None:
    client = server_with("--cluster-enabled", "yes", port=_cluster_port())
    assert "not supported" in _warnings(check_redis(client, _settings()))["cluster_enabled"].risk


def test_without_config_info_stands_in_and_appendfsync_is_reported_unknown(
    server_with: StartServer,
) -> None:
    """Managed Redis often disables CONFIG; INFO still tells AOF and the eviction policy."""
    client = server_with("--rename-command", "CONFIG", "")
    with pytest.raises(redis.ResponseError):
        client.config_get("appendonly")
    findings = _by_setting(check_redis(client, _settings()))
    assert _warnings(list(findings.values())) == {}
    assert findings["appendfsync"].value == "unknown"
    assert findings["appendfsync"].level == logging.INFO

    # Read from INFO: turning eviction on is still seen (here through the command line).
    evicting = server_with("--rename-command", "CONFIG", "", "--maxmemory-policy", "allkeys-lru")
    assert set(_warnings(check_redis(evicting, _settings()))) == {"maxmemory-policy"}


def test_an_unreachable_redis_is_one_warning_not_an_exception() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=1)
    findings = check_redis(client, _settings())
    assert len(findings) == 1
    assert findings[0].level == logging.WARNING
    assert "could not be read" in findings[0].risk


def test_the_async_check_finds_what_the_sync_one_finds(own_redis: RedisServer) -> None:
    sync = redis.Redis(port=own_redis.port)
    sync.config_set("maxmemory-policy", "volatile-lru")

    async def run() -> list[Finding]:
        client = aioredis.Redis(port=own_redis.port)
        try:
            return await check_redis_async(client, _settings())
        finally:
            await client.aclose()

    found = asyncio.run(run())
    assert [f.setting for f in found] == [f.setting for f in check_redis(sync, _settings())]
    assert "maxmemory-policy" in _warnings(found)


def test_a_tight_visibility_timeout_and_a_skewed_clock_are_warnings(
    own_redis: RedisServer,
) -> None:
    client = redis.Redis(port=own_redis.port)
    client.config_set("maxmemory", 512 * 1024 * 1024)
    # Settings accepts it (hard limit < visibility timeout), but with 50 s to spare.
    tight = _settings(
        visibility_timeout_seconds=350,
        task_soft_time_limit_seconds=240,
        task_time_limit_seconds=300,
    )
    warning = _warnings(check_redis(client, tight))["visibility_timeout"]
    assert "only 50s" in warning.risk

    facts = read_facts(client)
    assert facts.clock_offset is not None and abs(facts.clock_offset) < 5  # same host
    skewed = dataclasses.replace(facts, clock_offset=-2000.0)
    warning = _warnings(assess(skewed, _settings()))["clock"]
    assert warning.value == "-2000s" and "NTP" in warning.risk
    assert assess(dataclasses.replace(facts, clock_offset=30.0), _settings()) == []


def test_the_compose_redis_command_line_passes_the_check(tmp_path: Path) -> None:
    """deploy/docker-compose.yml's Redis settings, run on a real server, raise no warning."""
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    command = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    server = _Server(tmp_path / "redis", *command[1:]).start()
    try:
        findings = check_redis(redis.Redis(port=server.port), _settings())
    finally:
        server.stop()
    assert findings == []


def test_assess_on_facts_alone_reads_info_when_config_is_empty() -> None:
    facts = ServerFacts(
        config={},
        info={"aof_enabled": 0, "maxmemory_policy": "allkeys-random", "maxmemory": 0},
    )
    warnings = _warnings(assess(facts, _settings()))
    assert set(warnings) == {"appendonly", "maxmemory-policy"}
    # No CONFIG: whether snapshots are taken is unknown, so the warning claims neither.
    assert "since the last snapshot, if any" in warnings["appendonly"].risk
