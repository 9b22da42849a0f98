"""The idempotency key of a delivery: what makes two requests "the same event".

The rule, in order:

1. ``X-Upload-Post-Delivery`` (the sender's unique delivery id, meant for de-duplication), when
   present: ``d:<id>``. The sender reuses it on its own retries.
2. Otherwise a rule per documented event type, over the fields that identify the *fact* rather
   than this particular request, so that a re-sent event with a fresh ``created_at`` still counts
   once where the fact is the same:

   - ``upload_completed``: ``job_id`` + ``platform`` + success + ``post_id`` + ``publish_id``
     (the provider's docs name ``post_id``/``publish_id`` as the identifiers for successful
     posts, and an upload fires once per platform). Without a ``job_id`` or post ids (a failed
     upload has none) the event's ``created_at`` and error text are added, since nothing else
     tells two failures of the same profile apart.
   - account events: ``platform`` + ``account_name`` + ``status`` + ``created_at`` (a later
     reconnect is a new fact and carries a new ``created_at``).

3. Anything else (unknown event names, payloads missing those fields): a hash of the canonical
   body (keys sorted, no whitespace), so byte-level re-sends of the same JSON still match.

Derived keys are ``e:<sha256 prefix>``; the prefixes keep the three sources apart.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

import orjson

from uphooks.events import ACCOUNT_EVENTS

_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _digest(*parts: object) -> str:
    raw = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)
    return "e:" + hashlib.sha256(raw).hexdigest()[:40]


def delivery_key(delivery_id: str | None, payload: Mapping[str, Any]) -> str:
    if delivery_id:
        if _SAFE_ID.match(delivery_id):
            return "d:" + delivery_id
        # Ids with odd characters are hashed so a key is always safe inside a Redis key name.
        return "d:" + hashlib.sha256(delivery_id.encode()).hexdigest()[:40]

    event = payload.get("event")
    if event == "upload_completed":
        result = payload.get("result")
        result = result if type(result) is dict or isinstance(result, Mapping) else {}
        ids = (result.get("post_id"), result.get("publish_id"))
        job_id = payload.get("job_id")
        platform = payload.get("platform")
        if platform and (job_id or any(ids)):
            if job_id and any(ids):
                return _digest(event, job_id, platform, result.get("success"), *ids)
            return _digest(
                event,
                job_id,
                platform,
                result.get("success"),
                *ids,
                payload.get("profile_username"),
                payload.get("created_at"),
                result.get("error"),
            )
    elif event in ACCOUNT_EVENTS:
        fields = [payload.get(f) for f in ("platform", "account_name", "status", "created_at")]
        if all(fields):
            return _digest(event, *fields)

    return _digest("body", payload)
