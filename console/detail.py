"""One event for its page: the record, every handler's pair with its attempts (the history
workers/index.lua keeps, the last run, the dead letter's), in two pipelined round trips."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import redis

from console.records import (
    Record,
    aggregate,
    attempt_of,
    fields_of,
    handler_states,
    json_object,
    unroutable,
)
from console.shapes import Attempt, EventDetail, HandlerDetail
from uphooks.keys import Keys
from workers.deadletter import ROUTING_HANDLER, entry_id


def read_event(client: redis.Redis, keys: Keys, key: str) -> EventDetail | None:
    """The delivery ``key`` with its handlers' attempts; None when it is not kept."""
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.delivery(key))
    pipe.hgetall(keys.handled(key))
    pipe.zscore(keys.events_index, key)
    raw, handled, score = pipe.execute()
    if raw is None:
        return None
    record = Record.parse(raw)
    fields = fields_of(handled)
    states = handler_states(fields)
    names = list(states)
    if unroutable(fields):
        names.append(ROUTING_HANDLER)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.lrange(keys.attempts(key, name), 0, -1)
        pipe.get(keys.dlq_entry(entry_id(key, name)))
    got = pipe.execute()
    handlers = []
    for i, name in enumerate(names):
        history, dead = got[2 * i], json_object(got[2 * i + 1])
        last = json_object(fields.get(name + "@", "").encode())
        state = states.get(name, "dead")
        next_at = last.get("next_at") if state == "retrying" else None
        handlers.append(
            HandlerDetail(
                handler=name,
                state=state,
                token=fields.get(name + "#"),
                next_retry_at=float(next_at) if next_at is not None else None,
                attempts=_attempts(history, last, dead),
            )
        )
    erased = record.erased
    return EventDetail(
        key=key,
        event=record.event,
        received_at=float(score) if score is not None else record.received_at,
        state=aggregate(fields, states),
        body=record.body.encode() if record.body is not None else None,
        headers=record.headers,
        erased=erased is not None,
        handlers=handlers,
        job_id=record.kept("job_id"),
        post_ids=tuple(record.kept("post_ids") or ()),
        platforms=tuple(record.kept("platforms") or ()),
        profile=record.kept("profile"),
        erased_by=erased.get("by") if erased else None,
        erased_at=erased.get("at") if erased else None,
        source=record.source,
    )


def _attempts(history: list[bytes], last: dict[str, Any], dead: dict[str, Any]) -> list[Attempt]:
    """One pair's attempts, oldest first: its history list, then its last run when that is
    newer, else what its dead letter says; a dead attempt's traceback from the dead letter."""
    attempts = [attempt_of(json_object(h)) for h in history]
    if last and (not attempts or attempt_of(last).at > attempts[-1].at):
        # A first run that succeeded is only in "<handler>@" (workers/index.lua).
        attempts.append(attempt_of(last))
    if not attempts and dead:
        attempts = [
            attempt_of(
                {
                    "attempt": dead.get("attempts"),
                    "at": dead.get("dead_at"),
                    "outcome": "dead",
                    "error": dead.get("error"),
                    "traceback": dead.get("traceback"),
                }
            )
        ]
    if attempts and attempts[-1].outcome == "dead" and not attempts[-1].traceback and dead:
        attempts[-1] = replace(attempts[-1], traceback=dead.get("traceback"))
    return attempts
