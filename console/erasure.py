"""Erasing a delivery's payload: the body (and the copies its dead letters keep) replaced by
nothing, the outcomes, attempts and indexes kept, with what the console lists by."""

from __future__ import annotations

import time

import orjson
import redis

from console.records import Record, fields_of, handler_states
from uphooks.keys import Keys
from workers.deadletter import ROUTING_HANDLER, entry_id


def erase_payload(client: redis.Redis, keys: Keys, key: str, who: str) -> bool:
    """Replace the stored body (and the copies dead letters keep) with nothing, keeping the
    outcome rows, the attempt history and the indexes; False when there is no such delivery.
    What the console lists by (platforms, profile, job and post ids) is kept."""
    name = keys.delivery(key)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(name)  # type: ignore[no-untyped-call]
                raw = pipe.get(name)
                if raw is None:
                    return False
                erased = erased_record(raw, who)  # type: ignore[arg-type]
                handlers = list(handler_states(fields_of(pipe.hgetall(keys.handled(key)))))
                dead = [keys.dlq_entry(entry_id(key, h)) for h in handlers]
                dead.append(keys.dlq_entry(entry_id(key, ROUTING_HANDLER)))
                entries = pipe.mget(dead) if dead else []
                pipe.multi()
                pipe.set(name, erased, keepttl=True)
                for entry_name, entry in zip(dead, entries, strict=True):
                    if entry is not None:
                        letter = orjson.loads(entry)
                        letter["record"] = erased.decode()
                        pipe.set(entry_name, orjson.dumps(letter), keepttl=True)
                pipe.execute()
                return True
            except redis.WatchError:
                continue


def erased_record(raw: bytes, who: str) -> bytes:
    """The stored record ``raw`` with its body gone and who erased it when (as it is when it
    was erased already)."""
    record = orjson.loads(raw)
    if record.get("erased"):
        return raw
    parsed = Record.parse(raw)
    record["body"] = ""
    record["erased"] = {
        "by": who,
        "at": round(time.time(), 3),
        "platforms": list(parsed.kept("platforms")),
        "profile": parsed.kept("profile"),
        "job_id": parsed.kept("job_id"),
        "post_ids": list(parsed.kept("post_ids")),
    }
    return orjson.dumps(record)
