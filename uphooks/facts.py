"""Which *fact* a delivery reports, so a webhook and a reconciled copy of it can be matched.

A webhook and Upload-Post's read-back API name one platform result differently (docs/
reconciliation.md): the webhook has ``job_id``, ``result.post_id`` / ``result.publish_id`` and
``created_at``; a history item has ``request_id``, ``platform_post_id`` (a string or a list) and
``upload_timestamp``. Both sides are reduced here to the same *fact names*; two records report the
same fact when they share at least one name:

- ``post|<platform>|<id>`` for every platform post id a successful result names: the identifier
  both sides surely share (the provider's docs name it for de-duplication);
- ``job|<id>|<platform>|<ok or failed>`` when the webhook has a ``job_id`` or the item a
  ``request_id`` (equal for API uploads that chose their id; not documented beyond that);
- ``near|<profile>|<platform>|<ok or failed>|<window>``: the same profile, platform and outcome
  within about :data:`NEAR_SECONDS`. Every result writes the window its time falls in; only a
  result without post ids (every failure) looks for it, in that window and both neighbours.

Account events (drift, uphooks_cli/drift.py) are ``account|<profile>|<platform>|<status>|<window>``
with a window of :data:`ACCOUNT_SECONDS`.

The names are hashed into Redis keys (``<prefix>:fact:<sha256 prefix>``) by
:func:`fact_keys`; the readable names are for docs, tests and ``--dry-run``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from uphooks.events import ACCOUNT_EVENTS
from uphooks.indexes import ids_of, post_ids_of

#: Two failures (or results without post id) of one profile and platform this close together
#: are taken for one fact: timestamps on the two sides are not the same clock reading.
NEAR_SECONDS = 15 * 60
#: Account events of one profile, platform and status this close together are one fact.
ACCOUNT_SECONDS = 6 * 3600


@dataclass(frozen=True)
class Facts:
    """What one record writes when it is kept, and what it looks for before that."""

    writes: tuple[str, ...]
    looks: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.looks)


NONE = Facts((), ())


def timestamp(value: object) -> float | None:
    """Unix seconds of an ISO 8601 string (UTC unless it says otherwise), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _windowed(base: str, at: float | None, width: int) -> Facts:
    if at is None:
        return NONE
    window = int(at // width)
    return Facts((f"{base}|{window}",), tuple(f"{base}|{window + d}" for d in (-1, 0, 1)))


def result_facts(
    *,
    platform: object,
    success: object,
    post_ids: Iterable[str],
    job_id: object,
    profile: object,
    at: float | None,
) -> Facts:
    """The facts of one platform result, whichever side it was read from."""
    if not isinstance(platform, str) or not platform or not isinstance(success, bool):
        return NONE
    outcome = "ok" if success else "failed"
    names: list[str] = []
    ids = sorted(set(post_ids)) if success else []
    names += [f"post|{platform}|{i}" for i in ids]
    if isinstance(job_id, str) and job_id:
        names.append(f"job|{job_id}|{platform}|{outcome}")
    # Every result writes its "near" fact, so one without post ids on the other side finds it;
    # only a result without post ids looks for one (two posts of a profile may be minutes apart).
    near = _windowed(f"near|{profile or ''}|{platform}|{outcome}", at, NEAR_SECONDS)
    return Facts((*names, *near.writes), (*names, *(() if ids else near.looks)))


def webhook_facts(payload: Mapping[str, Any]) -> Facts:
    """The facts a received (or injected) event reports; NONE for events that are not facts."""
    event = payload.get("event")
    if event in ACCOUNT_EVENTS:
        return account_facts(
            payload.get("profile_username"),
            payload.get("platform"),
            payload.get("status"),
            timestamp(payload.get("created_at")),
        )
    if event != "upload_completed":
        return NONE
    result = payload.get("result")
    result = result if type(result) is dict or isinstance(result, Mapping) else {}
    # ``post_ids``: every id of a history item that named several (uphooks/reconcile.py).
    return result_facts(
        platform=payload.get("platform"),
        success=result.get("success"),
        post_ids=post_ids_of(payload),
        job_id=payload.get("job_id") or payload.get("request_id"),
        profile=payload.get("profile_username"),
        at=timestamp(payload.get("created_at")),
    )


def history_facts(item: Mapping[str, Any]) -> Facts:
    """The facts one upload-history item (or status result) reports."""
    return result_facts(
        platform=item.get("platform"),
        success=item.get("success"),
        post_ids=ids_of(item.get("platform_post_id")),
        job_id=item.get("request_id") or item.get("job_id"),
        profile=item.get("profile_username"),
        at=timestamp(item.get("upload_timestamp")),
    )


def account_facts(profile: object, platform: object, status: object, at: float | None) -> Facts:
    if not isinstance(platform, str) or not isinstance(status, str) or not platform:
        return NONE
    return _windowed(f"account|{profile or ''}|{platform}|{status}", at, ACCOUNT_SECONDS)


def fact_key(prefix: str, name: str) -> str:
    """The Redis key of one fact name (hashed: ids may hold any character)."""
    return fact_prefix(prefix) + _hash(name)


def fact_prefix(prefix: str) -> str:
    """What :func:`fact_key` puts before a fact's hash."""
    return f"{prefix}:fact:"


@functools.lru_cache(maxsize=4096)
def _hash(name: str) -> str:
    # Cached: most names of a delivery are time windows its neighbours share (the ingress hashes
    # five names per delivery).
    return hashlib.sha256(name.encode()).hexdigest()[:32]


def spec(facts: Facts, reconciled: bool = False) -> bytes:
    """The facts of one delivery as receiver/enqueue.lua takes them (its header says how)."""
    if not facts:
        return b""
    looks = facts.looks[:99]
    mode = "r" if reconciled else "w"
    return (mode + f"{len(looks):02d}" + "".join(map(_hash, (*looks, *facts.writes)))).encode()
