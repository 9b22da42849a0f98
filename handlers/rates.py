"""Rate limits a handler declares: ``@on(..., rate="30/s")``, read once when it is registered.

A limit is ``"<count>/<period>"`` with the period ``s``, ``m`` or ``h``, optionally a number
before it (``"1/2s"``), and optionally ``" burst <n>"``: how many may go at once after a quiet
spell (default: the count, as a token bucket of that size). ``rate=`` takes one limit (a bucket
named after the handler) or a mapping of bucket names to limits: handlers that name the same
bucket share it, and a run needs a token from every bucket of its handler (Telegram: one bucket
per chat, one per bot). The buckets live in Redis and are shared by every worker
(workers/rate_limits.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from uphooks.errors import ConfigurationError

_LIMIT = re.compile(
    r"^\s*(?P<count>\d+(?:\.\d+)?)\s*/\s*(?P<n>\d+(?:\.\d+)?)?\s*(?P<unit>s|m|h)"
    r"(?:\s+burst\s+(?P<burst>\d+))?\s*$"
)
_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class Rate:
    """``count`` runs per ``per`` seconds, ``burst`` of them at once."""

    count: float
    per: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds between two runs at the steady rate."""
        return self.per / self.count

    def __str__(self) -> str:
        units = {1.0: "s", 60.0: "m", 3600.0: "h"}
        period = units.get(self.per, f"{self.per:g}s")
        default = max(1, int(self.count))
        burst = f" burst {self.burst}" if self.burst != default else ""
        return f"{self.count:g}/{period}{burst}"


def parse_rate(text: str) -> Rate:
    match = _LIMIT.match(text)
    if match is None:
        raise ConfigurationError(
            f"rate {text!r}: give '<count>/<period>' like '30/s', '100/m', '1/2s', "
            "optionally with ' burst <n>'"
        )
    count = float(match["count"])
    per = float(match["n"] or 1) * _SECONDS[match["unit"]]
    if count <= 0 or per <= 0:
        raise ConfigurationError(f"rate {text!r}: count and period must be positive")
    burst = int(match["burst"]) if match["burst"] else max(1, int(count))
    if burst < 1:
        raise ConfigurationError(f"rate {text!r}: burst must be 1 or more")
    return Rate(count, per, burst)


_BUCKET = re.compile(r"^[A-Za-z0-9._:@+-]{1,120}$")


def parse_rates(handler: str, rate: str | Mapping[str, str] | None) -> dict[str, Rate]:
    """Bucket name -> limit, for ``@on(..., rate=...)``; one limit is a bucket of the handler."""
    if rate is None:
        return {}
    if isinstance(rate, str):
        return {handler: parse_rate(rate)}
    given = dict(rate)
    if not given:
        raise ConfigurationError(f"handler {handler!r}: rate={rate!r} names no bucket")
    for bucket in given:
        if not _BUCKET.match(bucket):
            raise ConfigurationError(
                f"handler {handler!r}: rate bucket {bucket!r} must be 1-120 of A-Z a-z 0-9 ._:@+-"
            )
    return {bucket: parse_rate(text) for bucket, text in given.items()}
