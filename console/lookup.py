"""Finding deliveries by a term: a delivery key, a job_id or a platform post id, through the
lookup buckets (``<prefix>:ix:find:<n>``, uphooks/indexes.py), newest first."""

from __future__ import annotations

import time

import redis

from console.query import Pager, text
from uphooks.indexes import lookup_bucket_seconds, term_value
from uphooks.keys import Keys


def lookup(client: redis.Redis, keys: Keys, pager: Pager, term: str) -> list[str]:
    """Deliveries a delivery key, job_id or platform post id names, newest first."""
    term = term.strip()
    if not term:
        return []
    width = lookup_bucket_seconds(pager.retention_s)
    first, last = int(pager.floor(None) // width), int(time.time() // width)
    value = term_value(term)
    pipe = client.pipeline(transaction=False)
    pipe.exists(keys.delivery(term))
    for bucket in range(first, last + 1):
        for kind in ("j", "p"):
            low = f"[{kind}:{value}|".encode()
            pipe.zrangebylex(keys.lookup_bucket(bucket), low, low + b"\xff")
    exists, *found = pipe.execute()
    named = [term] if exists else []
    for members in found:
        # "<term>|<key>": a term never holds "|" (term_value), a key may.
        named += [text(m).partition("|")[2] for m in members]
    named = list(dict.fromkeys(named))
    if named == [term] or not named:
        return named
    pipe = client.pipeline(transaction=False)
    for key in named:
        pipe.zscore(keys.events_index, key)
        pipe.exists(keys.delivery(key))
    got = pipe.execute()
    live = [(float(got[2 * i] or 0), k) for i, k in enumerate(named) if got[2 * i + 1]]
    return [k for _, k in sorted(live, reverse=True)]
