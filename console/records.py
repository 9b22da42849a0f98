"""How the stored data reads: a delivery's record (``<prefix>:delivery:<key>``), its ledger hash
(``<prefix>:handled:<key>``: each handler's pair state and the ``#``/``@``... fields beside it,
workers/index.lua) and one attempt's JSON, into the console's states and rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from console.query import text
from console.shapes import Attempt, EventRow
from uphooks import indexes
from workers.deadletter import ROUTING_HANDLER

_SUFFIXES = ("@", "#", "!", "%", "^", "&", "=")
_RANK = {"done": 1, "pending": 2, "running": 3, "retrying": 4, "dead": 5}


def pair_state(state: str, token: str | None) -> str:
    """The console's name for a ledger pair state (workers/index.lua ``ix_pair_state``)."""
    if state in ("queued", "waiting"):
        attempt = token.rsplit(".", 1)[-1] if token else "1"
        return "retrying" if attempt.isdigit() and int(attempt) > 1 else "pending"
    return state


def fields_of(raw: object) -> dict[str, str]:
    """A hash as HGETALL or page.lua returns it (a dict, or a flat list of names and values)."""
    if isinstance(raw, dict):
        return {text(k): text(v) for k, v in raw.items()}
    flat = [text(v) for v in raw] if isinstance(raw, list) else []
    return dict(zip(flat[::2], flat[1::2], strict=True))


def handler_states(fields: dict[str, str]) -> dict[str, str]:
    """Each handler the ledger hash names, with its pair's console state, by name."""
    return {
        name: pair_state(value, fields.get(name + "#"))
        for name, value in sorted(fields.items())
        if not name.startswith("~") and not name.endswith(_SUFFIXES) and value != ""
    }


def unroutable(fields: dict[str, str]) -> bool:
    """Whether no handler could be chosen for the delivery (it is dead as a whole)."""
    return fields.get("~") == "unroutable"


def aggregate(fields: dict[str, str], handlers: dict[str, str]) -> str:
    """The delivery's state: its worst pair's (pending until it was routed)."""
    if unroutable(fields):
        return "dead"
    worst = "done" if "~" in fields else "pending"
    for s in handlers.values():
        if _RANK.get(s, 0) > _RANK[worst]:
            worst = s
    return worst


@dataclass(frozen=True)
class Record:
    """A delivery's stored record: the body as received, or what an erasure kept of it."""

    event: str
    received_at: float
    payload: dict[str, Any]
    body: str | None
    headers: dict[str, str]
    erased: dict[str, Any] | None
    source: str

    @classmethod
    def parse(cls, raw: bytes) -> Record:
        record = orjson.loads(raw)
        erased = record.get("erased")
        body = record.get("body")
        payload: Any = {}
        if isinstance(body, str) and not erased:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = {}
        return cls(
            event=str(record.get("event") or "?"),
            received_at=float(record.get("received_at") or 0.0),
            payload=payload if isinstance(payload, dict) else {},
            body=None if erased else (body if isinstance(body, str) else None),
            headers=dict(record.get("headers") or {}),
            erased=erased if isinstance(erased, dict) else None,
            source=str(record.get("source") or "webhook"),
        )

    def kept(self, name: str) -> Any:
        """What the body said (or, once erased, what the erasure kept of it)."""
        if self.erased is not None:
            return self.erased.get(name)
        return {
            "platforms": indexes.platforms_of(self.payload),
            "profile": indexes.profile_of(self.payload),
            "job_id": indexes.job_id_of(self.payload),
            "post_ids": indexes.post_ids_of(self.payload),
        }[name]


def attempt_of(details: dict[str, Any]) -> Attempt:
    """One attempt as the worker wrote it (its outcome guessed from older shapes)."""
    outcome = details.get("outcome")
    if not isinstance(outcome, str):
        outcome = "retry" if "next_at" in details else "dead" if details.get("error") else "done"
    duration = details.get("duration")
    return Attempt(
        attempt=int(details.get("attempt") or 0),
        at=float(details.get("at") or 0.0),
        duration_s=float(duration) if duration is not None else None,
        outcome=outcome,
        error=details.get("error"),
        traceback=details.get("traceback"),
    )


def json_object(raw: object) -> dict[str, Any]:
    """A JSON object stored as bytes or text; {} for nothing, bad JSON or anything else."""
    if not raw:
        return {}
    try:
        value = orjson.loads(raw if isinstance(raw, bytes | str) else b"")
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def row_of(item: object) -> EventRow:
    """One list row as page.lua returns it: [key, score, record, ledger hash]."""
    assert isinstance(item, list)
    key, score, raw, handled = item
    record = Record.parse(raw)
    fields = fields_of(handled)
    states = handler_states(fields)
    if unroutable(fields):
        states[ROUTING_HANDLER] = "dead"
    return EventRow(
        key=text(key),
        event=record.event,
        received_at=float(text(score)),
        state=aggregate(fields, states),
        platforms=tuple(record.kept("platforms") or ()),
        profile=record.kept("profile"),
        handlers=states,
        erased=record.erased is not None,
    )
