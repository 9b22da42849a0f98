"""The message protocol: the one Celery task, its two kinds of message, and pair ids.

There is one task, ``uphooks.process(keys, pairs=None)``, and messages are only wake-ups: the
ledger in Redis (workers/ledger.py) says what is to be done, and a message that names work the
ledger no longer expects is a no-op.

- A **route message** names delivery keys (``keys``): route each delivery to its handlers. The
  ingress pushes these (receiver/enqueue.lua), and so does recovery for a delivery never routed.
- A **pair message** names ``pairs``: ``[key, handler, token]`` each, run by the scheduler
  (workers/ledger.py's move script) when a retry, a hand-off or a recovery comes due. The token
  (``<generation>.<attempt>``) fences it: it runs only while the ledger holds the same token.

A pair id is ``<key>|<handler>`` (handler names never hold ``|``); ``<key>|`` stands for the
delivery itself while it waits to be routed.

The ingress must not pay for a Celery producer on the event loop (``task.delay()`` there is
synchronous and ~10x slower, see docs/performance.md), and the de-duplication check and the
enqueue must be one atomic Redis step. So the message is built here, as Celery's task protocol 2
inside kombu's Redis-transport envelope, and the ingress's Lua script fills in the body. A test
(tests/test_pipeline.py) proves a real worker consumes it.

The message names the deliveries by key; the worker reads their stored bodies from Redis.

The envelope is rendered once per queue (:class:`Envelope`); each message then only draws its
two ids, so the ingress pays no JSON encoding per message.
"""

from __future__ import annotations

import os
import re
import socket
import uuid

import orjson

PROCESS_TASK = "uphooks.process"
#: The keyword argument of a pair message.
PAIRS_KWARG = "pairs"
#: A pair as a message carries it: (delivery key, handler name, token).
PairRef = tuple[str, str, str]


def pair_id(key: str, handler: str) -> str:
    """The id of one (delivery, handler) pair in the ledger's schedule and dead letters."""
    return f"{key}|{handler}"


def split_pair_id(member: str) -> tuple[str, str]:
    """(key, handler) of a pair id; handler is "" for a delivery waiting to be routed."""
    key, _, handler = member.rpartition("|")
    return key, handler


_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
EMBED_JSON = orjson.dumps(_EMBED).decode()

# Stand-ins for the ids while the fixed part is rendered; they cannot occur in the rest of it.
_TASK_ID = "\x00task-id\x00"
_TAG = "\x00delivery-tag\x00"
_QUEUE = "\x00queue\x00"


def _render(queue: str, origin: str, task_id: str, tag: str) -> str:
    headers: dict[str, object] = {
        "lang": "py",
        "task": PROCESS_TASK,
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": 0,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": "(deliveries)",
        "kwargsrepr": "{}",
        "origin": origin,
        "ignore_result": True,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    properties = {
        "correlation_id": task_id,
        "reply_to": "",
        "delivery_mode": 2,
        # The anonymous exchange: kombu restores an unacknowledged message to the list named by
        # the routing key, which is what we want after a worker dies.
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": 0,
        # No ``body_encoding``: the body is plain JSON text, no base64 round trip.
        "delivery_tag": tag,
    }
    rest = orjson.dumps(
        {
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
    ).decode()
    return "," + rest[1:]


class Envelope:
    """Messages for one queue: ``prefix + json_string(body) + suffix(...)`` is one message."""

    prefix = '{"body":'

    def __init__(self, queue: str, *, origin: str | None = None) -> None:
        origin = origin or f"uphooks-receiver@{socket.gethostname()}"
        # orjson writes the stand-ins' NUL bytes as \u0000: look for them in that form.
        rendered = _render(queue, origin, _TASK_ID, _TAG)
        task_id, tag = (orjson.dumps(s).decode()[1:-1] for s in (_TASK_ID, _TAG))
        before_tag, after_tag = rendered.split(tag)
        self._id_parts = before_tag.split(task_id)
        self._after_tag = after_tag

    def suffix(self) -> str:
        """The rest of one message, with a fresh task id and delivery tag: one call per message."""
        raw = os.urandom(32)
        task_id = str(uuid.UUID(bytes=raw[:16], version=4))
        tag = str(uuid.UUID(bytes=raw[16:], version=4))
        return task_id.join(self._id_parts) + tag + self._after_tag


def lua_template(*, origin: str | None = None) -> list[str]:
    """The envelope as a Lua script assembles it for any queue: literal parts, with the name
    of what goes between each two (``id``, ``tag`` or ``queue``), alternating.

    ``prefix + json_string(body) + parts[0] + <parts[1]> + parts[2] + ...`` is one message;
    see workers/move.lua.
    """
    origin = origin or f"uphooks-worker@{socket.gethostname()}"
    rendered = _render(_QUEUE, origin, _TASK_ID, _TAG)
    names = {orjson.dumps(s).decode()[1:-1]: n for s, n in _PLACEHOLDERS}
    pieces = re.split("(" + "|".join(re.escape(p) for p in names) + ")", rendered)
    return [names.get(piece, piece) if i % 2 else piece for i, piece in enumerate(pieces)]


_PLACEHOLDERS = ((_TASK_ID, "id"), (_TAG, "tag"), (_QUEUE, "queue"))


def task_body(keys: list[str]) -> str:
    """The Celery body for ``uphooks.process(keys)``; the Lua script builds the same shape."""
    return orjson.dumps([[keys], {}, _EMBED]).decode()


def pair_body(pairs: list[PairRef]) -> str:
    """The Celery body of a pair message; workers/move.lua builds the same shape."""
    return orjson.dumps([[[]], {PAIRS_KWARG: [list(p) for p in pairs]}, _EMBED]).decode()
