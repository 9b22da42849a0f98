"""The Celery task message the ingress pushes straight onto the Redis list a worker reads.

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
import socket
import uuid

import orjson

PROCESS_TASK = "uphooks.process"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
EMBED_JSON = orjson.dumps(_EMBED).decode()

# Stand-ins for the ids while the fixed part is rendered; they cannot occur in the rest of it.
_TASK_ID = "\x00task-id\x00"
_TAG = "\x00delivery-tag\x00"


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


def task_body(keys: list[str]) -> str:
    """The Celery body for ``uphooks.process(keys)``; the Lua script builds the same shape."""
    return orjson.dumps([[keys], {}, _EMBED]).decode()
