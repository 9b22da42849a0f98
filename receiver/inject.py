"""Deliveries the sender never sent, stored through the ingress's own path.

Reconciliation (uphooks/reconcile.py) finds results Upload-Post's API knows and no webhook told
us about; this module keeps them exactly as the ingress keeps a webhook: the same delivery key
rule (receiver/delivery_key.py), the same record, the same :class:`Enqueuer` and enqueue script
(de-duplication, events index, the ledger's schedule, the route message). So routing, retries,
dead letters and replay treat an injected delivery like any other. Two things differ:

- the record says ``"source": "reconciled"`` (handlers see ``ctx.source``; ``uphooks events``
  shows it), and carries no headers;
- its facts (uphooks/facts.py) are checked in the same script: it is kept only when no delivery
  reports the same fact yet, and a real webhook for that fact arriving later is a duplicate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from receiver.delivery_key import delivery_key
from receiver.enqueue import Enqueuer
from uphooks import facts
from uphooks.indexes import receipt_terms
from uphooks.redis import async_client
from uphooks.settings import Settings

RECONCILED = "reconciled"


@dataclass(frozen=True)
class Injected:
    key: str
    kept: bool  # False: a delivery already reports this fact (or has this key)


def record_of(key: str, payload: Mapping[str, Any], source: str) -> tuple[bytes, bytes]:
    """The stored record of an injected delivery (receiver/ingest.py's shape plus ``source``)."""
    body = orjson.dumps(payload)
    record = orjson.dumps(
        {
            "event": payload["event"],
            "received_at": round(time.time(), 3),
            "headers": {},
            "body": body.decode(),
            "source": source,
        }
    )
    return record, facts.spec(facts.webhook_facts(payload), reconciled=True)


async def inject_async(
    settings: Settings, payloads: Sequence[Mapping[str, Any]], source: str = RECONCILED
) -> list[Injected]:
    client = async_client(settings)
    enqueuer = Enqueuer(client, settings)
    await enqueuer.start()
    try:
        keys = [delivery_key(None, p) for p in payloads]
        flags = await asyncio.gather(
            *(
                enqueuer.submit(key, *record_of(key, p, source), receipt_terms(p["event"], p))
                for key, p in zip(keys, payloads, strict=True)
            )
        )
    finally:
        await enqueuer.stop()
        await client.aclose()
    return [Injected(k, bool(f)) for k, f in zip(keys, flags, strict=True)]


def inject(
    settings: Settings, payloads: Sequence[Mapping[str, Any]], source: str = RECONCILED
) -> list[Injected]:
    """Keep ``payloads`` as deliveries marked ``source``; one result per payload, in order."""
    if not payloads:
        return []
    return asyncio.run(inject_async(settings, payloads, source))
