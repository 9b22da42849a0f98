"""What the console indexes a delivery by at receipt (docs/design.md section 11).

The ingress hands these *terms* to ``receiver/enqueue.lua`` with the record, packed like the
fact specs (one bytes string per delivery), so indexing costs no extra round trip. A term is an
index name after ``<prefix>:ix:`` (``ev:<event>``, ``pf:<platform>``, ``pr:<profile>``) or, with
``@`` first, a lookup term (``j:<job id>``, ``p:<post id>``), kept as ``<term>|<delivery key>``
in a time bucket (:func:`lookup_bucket_seconds`); terms are separated by ``\\x1f``. The console
reads with the same names (:func:`term_value`).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from typing import Any

SEPARATOR = "\x1f"
# A value is used as it is in a key name when it is short and plain; else it is hashed (the
# console hashes what an operator types the same way, so it still matches).
_PLAIN = re.compile(r"^[^\x00-\x20\x7f|]{1,100}$")


def lookup_bucket_seconds(retention_s: float) -> int:
    """How much receipt time one lookup bucket (``<prefix>:ix:find:<n>``) covers: a 24th of the
    retention, so a lookup reads 25 buckets and a bucket outlives its entries by at most that."""
    return max(1, math.ceil(retention_s / 24))


def term_value(value: str) -> str:
    """How ``value`` appears in an index or lookup name."""
    # ASCII first, without the regex (the same answer: printable ASCII but space and "|").
    if value.isascii() and value.isprintable() and 0 < len(value) <= 100:
        if " " not in value and "|" not in value:
            return value
    elif _PLAIN.match(value):
        return value
    return "h:" + hashlib.sha256(value.encode()).hexdigest()[:32]


def ids_of(value: object) -> list[str]:
    """The ids a payload field holds: one string or number, or a list of them (blanks left out)."""
    if type(value) is str:  # the usual case first: exact types cost a fraction of isinstance
        text = value.strip()
        return [text] if text else []
    if value is None:
        return []
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        return [text] if text else []
    if isinstance(value, list | tuple):
        return [i for v in value for i in ids_of(v)]
    return []


def platforms_of(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """The platform(s) an event names (``platform``: a string, or a list on some items)."""
    return tuple(dict.fromkeys(p for p in ids_of(payload.get("platform")) if p))


def profile_of(payload: Mapping[str, Any]) -> str | None:
    value = payload.get("profile_username")
    return value if isinstance(value, str) and value else None


def job_id_of(payload: Mapping[str, Any]) -> str | None:
    ids = ids_of(payload.get("job_id") or payload.get("request_id"))
    return ids[0] if ids else None


def post_ids_of(payload: Mapping[str, Any]) -> tuple[str, ...]:
    """Every platform post id an upload result names (``result.post_id`` / ``publish_id``)."""
    result = payload.get("result")
    if type(result) is not dict and not isinstance(result, Mapping):
        return ()
    names = ("post_id", "publish_id", "post_ids")
    return tuple(dict.fromkeys(i for n in names for i in ids_of(result.get(n))))


def receipt_terms(event: str, payload: Mapping[str, Any]) -> bytes:
    """The index and lookup terms of one delivery, as receiver/enqueue.lua takes them."""
    terms = [f"ev:{term_value(event)}"]
    terms += [f"pf:{term_value(p)}" for p in platforms_of(payload)]
    profile = profile_of(payload)
    if profile:
        terms.append(f"pr:{term_value(profile)}")
    job = job_id_of(payload)
    if job:
        terms.append(f"@j:{term_value(job)}")
    terms += [f"@p:{term_value(p)}" for p in post_ids_of(payload)]
    return SEPARATOR.join(terms).encode()
