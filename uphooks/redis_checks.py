"""Does this Redis server keep what the pipeline promises? Asked once at start-up, loudly.

A 2xx from the ingress means "the delivery is in Redis", and the sender never sends it again. So
the server's own settings decide what that promise is worth:

- ``appendonly``: without the append-only file a restart loses what was acknowledged since the
  last snapshot: queued events, de-duplication keys, done markers.
- ``appendfsync``: how often that file reaches the disk; what a host crash (not a Redis crash)
  can lose.
- ``maxmemory-policy``: anything but ``noeviction`` lets a full Redis delete our keys without an
  error; with ``noeviction`` it refuses writes instead, and the ingress answers 503 (retried).
- replicas and Redis Cluster cannot take our writes and multi-key scripts.
- the clocks: kombu compares each worker's clock with the time a message was taken to decide that
  its visibility timeout ran out, so the margin the settings leave (visibility timeout minus the
  longest hold: a retry hop plus the hard time limit) must cover the hosts' clock skew.

Nothing here refuses to start: each risk is a :class:`Finding` to log, at WARNING (data can be
lost or processed twice) or INFO (a trade-off worth knowing). This module imports only the shared
contracts and redis, so the ingress may use it as well as the worker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from uphooks.settings import Settings

#: The server settings read with CONFIG GET (often disabled on managed Redis; INFO stands in).
CONFIG_NAMES = ("appendonly", "appendfsync", "maxmemory-policy", "maxmemory", "save")
#: Share of maxmemory in use above which the start-up says so.
MEMORY_HIGH_WATER = 0.8
#: Below this many seconds of margin the visibility timeout is called tight.
TIGHT_MARGIN_SECONDS = 60


@dataclass(frozen=True)
class Finding:
    """One risky setting: what it is, what can go wrong, how loud to say it."""

    setting: str
    value: str
    risk: str
    level: int = logging.WARNING

    def __str__(self) -> str:
        return f"redis {self.setting}={self.value}: {self.risk}"


@dataclass(frozen=True)
class ServerFacts:
    """What was read from the server: CONFIG GET (empty where refused), INFO, clock offset."""

    config: Mapping[str, str]
    info: Mapping[str, Any]
    #: Our clock minus the server's, in seconds (None: not measured).
    clock_offset: float | None = None


def check_redis(client: redis.Redis, settings: Settings) -> list[Finding]:
    """Read the server's settings and return the risks; never raises for an unreachable Redis."""
    try:
        facts = read_facts(client)
    except redis.RedisError as exc:
        return [_unreadable(exc)]
    return assess(facts, settings)


async def check_redis_async(client: aioredis.Redis, settings: Settings) -> list[Finding]:
    """:func:`check_redis` for the ingress's asyncio client."""
    try:
        facts = await read_facts_async(client)
    except redis.RedisError as exc:
        return [_unreadable(exc)]
    return assess(facts, settings)


def read_facts(client: redis.Redis) -> ServerFacts:
    pipe = client.pipeline(transaction=False)
    for name in CONFIG_NAMES:
        pipe.config_get(name)
    config = _config(pipe.execute(raise_on_error=False))
    info = client.info()
    before = time.time()
    seconds, micros = client.time()
    after = time.time()
    return ServerFacts(config, info, (before + after) / 2 - (seconds + micros / 1e6))


async def read_facts_async(client: aioredis.Redis) -> ServerFacts:
    pipe = client.pipeline(transaction=False)
    for name in CONFIG_NAMES:
        pipe.config_get(name)
    config = _config(await pipe.execute(raise_on_error=False))
    info = await client.info()
    before = time.time()
    seconds, micros = await client.time()
    after = time.time()
    return ServerFacts(config, info, (before + after) / 2 - (seconds + micros / 1e6))


def _config(replies: list[Any]) -> dict[str, str]:
    config: dict[str, str] = {}
    for reply in replies:
        if isinstance(reply, dict):  # an error (CONFIG disabled) stays out
            config.update({_text(k): _text(v) for k, v in reply.items()})
    return config


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _unreadable(exc: Exception) -> Finding:
    return Finding(
        "settings",
        "unknown",
        f"could not be read ({exc}); durability (appendonly yes, noeviction) is unchecked",
    )


def assess(facts: ServerFacts, settings: Settings) -> list[Finding]:
    """The risks in ``facts`` for a pipeline configured by ``settings``; empty when all is well."""
    config, info = facts.config, facts.info
    findings: list[Finding] = []

    aof = config.get("appendonly") or ("yes" if info.get("aof_enabled") in (1, "1") else "no")
    if aof != "yes":
        if "save" not in config:
            since = "the last snapshot, if any"
        elif config["save"].strip():
            since = "the last snapshot"
        else:
            since = "it started (it takes no snapshots either)"
        findings.append(
            Finding(
                "appendonly",
                aof,
                f"a restart or crash of Redis loses every delivery acknowledged since {since}: "
                "queued events, de-duplication keys and done markers; the sender will not send "
                "those deliveries again. Set `appendonly yes`.",
            )
        )
    elif str(info.get("aof_last_write_status", "ok")) != "ok":
        findings.append(
            Finding(
                "aof_last_write_status",
                str(info["aof_last_write_status"]),
                "the last write to the append-only file failed (disk full?): Redis refuses "
                "writes until it succeeds, and the ingress answers 503 meanwhile.",
            )
        )

    fsync = config.get("appendfsync")
    if aof == "yes" and fsync is None:
        findings.append(
            Finding(
                "appendfsync",
                "unknown",
                "CONFIG is not available (a managed Redis?), so how often the append-only file "
                "reaches the disk is unchecked; ask your provider, and prefer `everysec` or "
                "`always`.",
                logging.INFO,
            )
        )
    elif aof == "yes" and fsync == "no":
        findings.append(
            Finding(
                "appendfsync",
                fsync,
                "the OS decides when the append-only file reaches the disk (often ~30 s): a host "
                "crash or power loss loses that much acknowledged deliveries. Use `everysec` "
                "(up to ~1 s) or `always` (nothing).",
            )
        )
    elif aof == "yes" and fsync == "everysec":
        findings.append(
            Finding(
                "appendfsync",
                fsync,
                "a host crash or power loss can lose up to ~1 s of acknowledged deliveries (a "
                "crash of Redis alone loses none); `always` closes that window at the cost of "
                "one fsync per batch of writes.",
                logging.INFO,
            )
        )

    policy = config.get("maxmemory-policy") or str(info.get("maxmemory_policy", "")) or "unknown"
    if policy != "noeviction":
        findings.append(
            Finding(
                "maxmemory-policy",
                policy,
                "a full Redis deletes keys to make room, without an error: queued events and "
                "stored deliveries vanish, and lost de-duplication keys and done markers make a "
                "resent delivery or a finished handler run again. Set `maxmemory-policy "
                "noeviction`: a full Redis then refuses writes and the ingress answers 503, "
                "which the sender retries.",
            )
        )
    findings.extend(_memory(config, info))

    role = str(info.get("role", "master"))
    if role not in ("master", "primary"):
        findings.append(
            Finding(
                "role",
                role,
                "this is a read-only replica: every delivery would be answered 503. Point "
                "UPHOOKS_REDIS_URL at the primary.",
            )
        )
    if info.get("cluster_enabled") in (1, "1"):
        findings.append(
            Finding(
                "cluster_enabled",
                "1",
                "Redis Cluster is not supported: kombu's Redis transport and the pipeline's "
                "multi-key scripts need one primary. Use a single primary with a replica and "
                "failover (a managed Redis, or Sentinel behind one address).",
            )
        )
    findings.extend(_visibility(facts.clock_offset, settings))
    return findings


def _memory(config: Mapping[str, str], info: Mapping[str, Any]) -> list[Finding]:
    raw = config.get("maxmemory", info.get("maxmemory"))
    try:
        limit = int(str(raw))
    except ValueError:
        return []
    if limit == 0:
        return [
            Finding(
                "maxmemory",
                "0",
                "no memory limit: a growing backlog fills the host until the OS kills Redis. "
                "Set maxmemory (with noeviction) so a full Redis refuses writes (503, retried) "
                "instead.",
                logging.INFO,
            )
        ]
    used = int(info.get("used_memory", 0))
    if used >= MEMORY_HIGH_WATER * limit:
        return [
            Finding(
                "maxmemory",
                str(limit),
                f"{used / limit:.0%} of it is in use: above UPHOOKS_REDIS_MEMORY_LIMIT_RATIO of "
                "it (0.9) the ingress answers new deliveries 503 until records expire or memory "
                "is added (draining the backlog keeps each record for the de-duplication "
                "window). Add memory, or shorten UPHOOKS_DEDUP_TTL_SECONDS (docs/deploy.md, "
                "'Sizing Redis').",
            )
        ]
    return []


def _visibility(offset: float | None, settings: Settings) -> list[Finding]:
    """The visibility timeout must outlast the longest hold of a message plus the clock skew."""
    vt = settings.visibility_timeout_seconds
    hold = settings.task_time_limit_seconds  # no message waits in a worker any more
    margin = vt - hold  # Settings made sure it is positive
    findings: list[Finding] = []
    if margin < TIGHT_MARGIN_SECONDS:
        findings.append(
            Finding(
                "visibility_timeout",
                f"{vt}s",
                f"only {margin}s beyond the longest hold of a message (the hard time limit of "
                f"{settings.task_time_limit_seconds}s): a worker stalled longer, or hosts whose "
                "clocks differ more, hand a message to a second worker. Raise "
                "UPHOOKS_VISIBILITY_TIMEOUT_SECONDS or lower the others.",
            )
        )
    if offset is not None and abs(offset) > margin / 2:
        findings.append(
            Finding(
                "clock",
                f"{offset:+.0f}s",
                f"this host's clock is {abs(offset):.0f}s off the Redis server's. kombu compares "
                "each worker's clock with the time a message was taken, so hosts more than "
                f"{margin}s apart (visibility timeout minus the longest hold) hand running or "
                "waiting messages to a second worker. Run NTP on every host.",
            )
        )
    return findings
