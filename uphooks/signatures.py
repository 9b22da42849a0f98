"""Webhook signatures: the two schemes uphooks signs and checks, written once.

- **upload-post** (the sender's, ``delivery-facts.md``): ``X-Upload-Post-Timestamp`` (unix s) and
  ``X-Upload-Post-Signature: sha256=<hex>``, the HMAC-SHA256 of ``"<timestamp>." + raw body``.
  Whether the sender keys it with the whole ``whsec_...`` string or with its base64-decoded part
  is not confirmed: :func:`upload_post_keys` gives both, and signing uses the whole string.
- **standard-webhooks** (standardwebhooks.com, what ``forward`` sends): ``webhook-id``,
  ``webhook-timestamp`` and ``webhook-signature`` (space-separated ``v1,<base64>``), the
  HMAC-SHA256 of ``"<id>.<timestamp>." + raw body`` keyed with the base64 part of
  ``whsec_<base64>`` (the prefix is optional, as in the standard's libraries).

The ingress (``receiver/verify.py``) keeps the HTTP side (which headers, which answer) and uses
the pieces below: keys prepared once (:func:`macs`), header values parsed with bounds
(:func:`upload_post_signatures`, :func:`standard_webhooks_signatures`), the timestamp judged
(:func:`timestamp_age`) and the body compared in constant time (:func:`matches`). Senders
(the simulator, chaos, bench, the forward handler) use the ``*_headers`` functions;
:func:`verify` checks a whole message at once.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

#: The schemes, named as in ``UPHOOKS_VERIFY``.
Scheme = Literal["upload-post", "standard-webhooks"]
WHSEC_PREFIX = "whsec_"
#: The standard's (and our) default: a signed timestamp older or newer than this is refused.
DEFAULT_TOLERANCE_SECONDS = 300
#: At most this many signatures of one header are looked at (rotation sends two or three).
MAX_SIGNATURES = 8

UPLOAD_POST_TIMESTAMP = "X-Upload-Post-Timestamp"
UPLOAD_POST_SIGNATURE = "X-Upload-Post-Signature"
WEBHOOK_ID, WEBHOOK_TIMESTAMP, WEBHOOK_SIGNATURE = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
)

_DIGEST_SIZE = hashlib.sha256().digest_size
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_UPLOAD_POST_VALUE = re.compile(r"^sha256=([0-9a-fA-F]{64})$")
_SPLIT = re.compile(r"[\s,]+")


# -- keys ----------------------------------------------------------------------------------------


def decode_whsec(secret: str) -> bytes | None:
    """The key inside ``whsec_<base64>`` (prefix optional); None when it is not base64."""
    try:
        key = base64.b64decode(secret.removeprefix(WHSEC_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key or None


def upload_post_keys(secret: str) -> list[bytes]:
    """The keys an upload-post signature may be made with: the string, then its decoded part."""
    keys = [secret.encode()]
    if secret.startswith(WHSEC_PREFIX):
        decoded = decode_whsec(secret)
        if decoded is not None:
            keys.append(decoded)
    return keys


def standard_webhooks_key(secret: str) -> bytes:
    """The Standard Webhooks key of ``secret``; ValueError when it is not ``whsec_<base64>``."""
    key = decode_whsec(secret)
    if key is None:
        raise ValueError("a Standard Webhooks secret is whsec_<base64>")
    return key


def macs(keys: Iterable[bytes]) -> list[hmac.HMAC]:
    """HMAC-SHA256 states keyed once, to be copied per message (this runs on every delivery)."""
    return [hmac.new(key, digestmod=hashlib.sha256) for key in keys]


# -- signing -------------------------------------------------------------------------------------


def upload_post_signature(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=<hex>`` for ``body``; a ``str`` secret is used as its UTF-8 bytes."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def upload_post_headers(secret: str | bytes, body: bytes, timestamp: int) -> dict[str, str]:
    """The signing headers the sender puts on a delivery."""
    return {
        UPLOAD_POST_TIMESTAMP: str(timestamp),
        UPLOAD_POST_SIGNATURE: upload_post_signature(secret, timestamp, body),
    }


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) for one message, with a decoded key."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def standard_webhooks_headers(
    secret: str | bytes, msg_id: str, body: bytes, timestamp: int
) -> dict[str, str]:
    """The three Standard Webhooks headers; ``secret`` is ``whsec_<base64>`` or a decoded key."""
    key = standard_webhooks_key(secret) if isinstance(secret, str) else secret
    return {
        WEBHOOK_ID: msg_id,
        WEBHOOK_TIMESTAMP: str(timestamp),
        WEBHOOK_SIGNATURE: standard_webhooks_signature(key, msg_id, timestamp, body),
    }


# -- verifying -----------------------------------------------------------------------------------


class Timing(enum.Enum):
    FRESH = "fresh"
    MALFORMED = "malformed"  # not unix seconds
    EXPIRED = "expired"  # older than the tolerance
    EARLY = "early"  # further ahead of our clock than the allowed skew


def timestamp_age(raw: str, now: float, tolerance: int, skew: int) -> tuple[Timing, int]:
    """How a signed timestamp compares with ``now``: the verdict and its age in seconds."""
    if not _TIMESTAMP.match(raw):
        return Timing.MALFORMED, 0
    age = now - int(raw)
    if age > tolerance:
        return Timing.EXPIRED, int(age)
    if -age > skew:
        return Timing.EARLY, int(age)
    return Timing.FRESH, int(age)


def upload_post_signatures(values: Sequence[str]) -> list[bytes]:
    """The well-formed ``sha256=<hex>`` digests in the header's values (bounded)."""
    found = []
    for part in _SPLIT.split(",".join(values).strip())[:MAX_SIGNATURES]:
        shaped = _UPLOAD_POST_VALUE.match(part)
        if shaped:
            found.append(bytes.fromhex(shaped.group(1)))
    return found


def standard_webhooks_signatures(value: str) -> list[bytes]:
    """The ``v1`` digests of a ``webhook-signature`` value; other versions (v1a) are skipped."""
    found = []
    for part in value.split()[:MAX_SIGNATURES]:
        version, _, encoded = part.partition(",")
        if version != "v1":
            continue
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == _DIGEST_SIZE:
            found.append(decoded)
    return found


def matches(
    keyed: Sequence[hmac.HMAC], prefix: bytes, body: bytes, signatures: Sequence[bytes]
) -> bool:
    """Does any signature match ``prefix + body`` under any key? Compared in constant time."""
    for mac in keyed:
        digest = mac.copy()
        digest.update(prefix)
        digest.update(body)
        expected = digest.digest()
        found = False
        for signature in signatures:
            found |= hmac.compare_digest(expected, signature)
        # Stopping at the first matching key tells an observer which key matched, never
        # anything about a key's bytes.
        if found:
            return True
    return False


def _header(headers: Mapping[str, str], name: str) -> str | None:
    lowered = name.lower()
    for key, value in headers.items():
        if key.lower() == lowered:
            return value
    return None


def verify(
    scheme: Scheme,
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """Is this message signed under ``scheme`` with one of ``secrets``, and fresh?"""
    if scheme == "upload-post":
        timestamp = _header(headers, UPLOAD_POST_TIMESTAMP)
        value = _header(headers, UPLOAD_POST_SIGNATURE)
        if timestamp is None or value is None:
            return False
        keys = [k for secret in secrets for k in upload_post_keys(secret)]
        prefix, sent = f"{timestamp}.".encode(), upload_post_signatures([value])
    else:
        msg_id = _header(headers, WEBHOOK_ID)
        timestamp = _header(headers, WEBHOOK_TIMESTAMP)
        value = _header(headers, WEBHOOK_SIGNATURE)
        if msg_id is None or timestamp is None or value is None:
            return False
        keys = [k for k in map(decode_whsec, secrets) if k is not None]
        prefix, sent = f"{msg_id}.{timestamp}.".encode(), standard_webhooks_signatures(value)
    now = time.time() if now is None else now
    if timestamp_age(timestamp, now, tolerance, tolerance)[0] is not Timing.FRESH:
        return False
    return matches(macs(keys), prefix, body, sent)
