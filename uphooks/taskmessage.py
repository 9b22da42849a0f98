"""The Celery task message the ingress pushes straight onto the Redis list a worker reads.

The ingress must not pay for a Celery producer on the event loop (``task.delay()`` there is
synchronous and ~10x slower, see docs/performance.md), and the de-duplication check and the
enqueue must be one atomic Redis step. So the message is built here, as Celery's task protocol 2
inside kombu's Redis-transport envelope, and the ingress's Lua script fills in the body. A test
(tests/test_pipeline.py) proves a real worker consumes it.

The message names the deliveries by key; the worker reads their stored bodies from Redis.
"""

from __future__ import annotations

import json
import socket
import uuid

PROCESS_TASK = "uphooks.process"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def envelope_parts(queue: str, *, origin: str | None = None) -> tuple[str, str]:
    """Return ``(prefix, suffix)``: ``prefix + json_string(body) + suffix`` is one message.

    A fresh task id and delivery tag are drawn per call, so call it once per message.
    """
    task_id = str(uuid.uuid4())
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
        "origin": origin or f"uphooks-receiver@{socket.gethostname()}",
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
        "delivery_tag": str(uuid.uuid4()),
    }
    rest = json.dumps(
        {
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        },
        separators=(",", ":"),
    )
    return '{"body":', "," + rest[1:]


def task_body(keys: list[str]) -> str:
    """The Celery body for ``uphooks.process(keys)``; the Lua script builds the same shape."""
    return json.dumps([[keys], {}, _EMBED], separators=(",", ":"))


EMBED_JSON = json.dumps(_EMBED, separators=(",", ":"))
