"""Where test handlers record their side effects: a list in Redis, read by the tests."""

from __future__ import annotations

import os

import redis

from uphooks.redis import sync_client
from uphooks.settings import get_settings

_client: tuple[int, redis.Redis] | None = None


def client() -> redis.Redis:
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), sync_client(get_settings()))
    return _client[1]


def key(name: str) -> str:
    return f"{get_settings().key_prefix}:test:{name}"


def record(handler: str, pair_key: str) -> None:
    client().rpush(key("effects"), f"{handler}|{pair_key}")


def record_once(handler: str, pair_key: str) -> bool:
    """An idempotent effect: keyed by ctx.pair_key, a repeat changes nothing."""
    if client().set(key(f"effect:{pair_key}"), 1, nx=True):
        record(handler, pair_key)
        return True
    return False


def flag(name: str) -> bool:
    return bool(client().exists(key(f"ctl:{name}")))


def count(name: str) -> int:
    return int(client().incr(key(name)))
