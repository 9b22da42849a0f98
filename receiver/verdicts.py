"""What the sender check concludes about one delivery: it passed, or why it failed.

``receiver/verify.py`` reaches a verdict; ``receiver/answers.py`` turns a failure into a status
code. The order of :class:`Reason` is policy shared by both: when every mode fails, the highest
reason is the one reported and answered.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.IntEnum):
    """Why a delivery failed, ordered: when every mode fails, the highest one is reported.

    The order puts first what may still become valid (a secret we do not know yet), so that a
    delivery is never given a final answer because another, unused mode found nothing.
    """

    MISSING = 1  # none of this mode's headers
    MALFORMED = 2  # the headers are there but cannot be read
    EXPIRED = 3  # the timestamp is older than the tolerance
    BAD_TOKEN = 4  # a token that is none of ours
    EARLY = 5  # the timestamp is further ahead of our clock than the allowed skew
    MISMATCH = 6  # well formed and fresh, but signed with none of our secrets


@dataclass(frozen=True, slots=True)
class Passed:
    mode: str
    # The delivery id the sender vouches for: signed (Standard Webhooks' ``webhook-id``) or sent
    # by a caller who knows the secret (``token``, ``none``). None when only the body is signed
    # (``upload-post``): an unsigned id header could be changed to replay a captured delivery.
    delivery_id: str | None = None
    # The signed timestamp (unix s), for modes that sign one.
    signed_at: int | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    mode: str
    reason: Reason
    detail: str


Verdict = Passed | Failed
