"""Who sent this delivery: signatures and tokens, checked on the raw bytes before any parsing.

``UPHOOKS_VERIFY`` names the accepted modes; any one passing is enough.

- ``upload-post``: ``X-Upload-Post-Signature: sha256=<hex>``, the HMAC-SHA256 of
  ``"<X-Upload-Post-Timestamp>." + raw body``. Whether the sender keys the HMAC with the whole
  ``whsec_...`` string or with its base64-decoded part is not confirmed, so both are tried.
- ``standard-webhooks``: ``webhook-id``, ``webhook-timestamp`` and ``webhook-signature``
  (space-separated ``v1,<base64>``), the HMAC-SHA256 of ``"<id>.<timestamp>." + raw body`` keyed
  with the base64 part of ``whsec_<base64>``.
- ``token``: one of the secrets in the configured header or as the last path segment.
- ``none``: everything passes (development only; the app warns at start-up).

The schemes themselves (what is signed, how keys are read, constant-time comparison) are in
``uphooks/signatures.py``; this module decides which headers are read and what a failure is.
The check has two steps so that a request is refused on its headers alone, before its body is
read: :meth:`Verifier.begin` reads the headers, :meth:`Pending.finish` the body. Either gives a
:class:`Passed` or a :class:`Failed`; ``receiver/answers.py`` turns a failure into a status code
(``docs/security.md`` says which and why). HMAC keys are prepared once, at start-up, and the
headers are read in one pass (this runs on every delivery).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from starlette.datastructures import Headers

from receiver.verdicts import Failed, Passed, Reason, Verdict
from uphooks import signatures
from uphooks.errors import ConfigurationError
from uphooks.settings import Settings
from uphooks.signatures import Timing

# The verdict types are re-exported: callers (ingest, tests) take them from here with the verifier.
__all__ = ["MODES", "Failed", "Passed", "Pending", "Reason", "Verdict", "Verifier"]

log = logging.getLogger("uphooks.receiver")

MODES = ("upload-post", "standard-webhooks", "token", "none")
MIN_SECRET_LENGTH = 16
# Bounds on what a header may hold before it is even looked at.
_MAX_TOKEN_LENGTH = 1024
_WEBHOOK_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_DELIVERY_HEADER = b"x-upload-post-delivery"
# The headers each mode reads, as they appear in the ASGI scope (lower case).
_UP_SIGNATURE, _UP_TIMESTAMP = b"x-upload-post-signature", b"x-upload-post-timestamp"
_SW_ID, _SW_TIMESTAMP, _SW_SIGNATURE = b"webhook-id", b"webhook-timestamp", b"webhook-signature"

# Header name -> every value it was sent with, for the names the configured modes read.
Found = Mapping[bytes, list[str]]


@dataclass(slots=True)
class _Candidate:
    """One mode's well-formed signature, waiting for the body."""

    mode: str
    macs: Sequence[hmac.HMAC]
    prefix: bytes
    signatures: Sequence[bytes]
    delivery_id: str | None
    signed_at: int

    def matches(self, body: bytes) -> bool:
        return signatures.matches(self.macs, self.prefix, body, self.signatures)


@dataclass(slots=True)
class Pending:
    """Headers looked right for at least one signing mode; the body decides."""

    candidates: list[_Candidate]
    secrets: int

    def finish(self, body: bytes) -> Verdict:
        for candidate in self.candidates:
            if candidate.matches(body):
                return Passed(candidate.mode, candidate.delivery_id, candidate.signed_at)
        modes = "/".join(c.mode for c in self.candidates)
        return Failed(
            modes,
            Reason.MISMATCH,
            f"the {modes} signature matches none of the {self.secrets} configured secret(s)",
        )


def _only(found: Found, name: bytes) -> str | None:
    """A header that must appear at most once; a repeated one reads as malformed ("")."""
    values = found.get(name)
    if not values:
        return None
    return values[0] if len(values) == 1 else ""


def _check_time(
    mode: str, header: str, raw: str, now: float, tolerance: int, skew: int
) -> Failed | None:
    timing, age = signatures.timestamp_age(raw, now, tolerance, skew)
    if timing is Timing.MALFORMED:
        return Failed(mode, Reason.MALFORMED, f"{header} must be unix seconds")
    if timing is Timing.EXPIRED:
        return Failed(mode, Reason.EXPIRED, f"{header} is {age} s old (tolerance {tolerance})")
    if timing is Timing.EARLY:
        return Failed(mode, Reason.EARLY, f"{header} is {-age} s ahead of our clock")
    return None


@dataclass(slots=True)
class _Signed:
    """What the two signing modes share: keys, a fresh timestamp, at least one signature."""

    macs: list[hmac.HMAC]
    tolerance: int
    skew: int

    def _candidate(
        self,
        mode: str,
        timestamp: tuple[str, str],  # (header name, value)
        now: float,
        sent: list[bytes],
        shape: str,  # what a well-formed signature header looks like
        prefix: bytes,
        delivery_id: str | None = None,
    ) -> Failed | _Candidate:
        header, value = timestamp
        late = _check_time(mode, header, value, now, self.tolerance, self.skew)
        if late is not None:
            return late
        if not sent:
            return Failed(mode, Reason.MALFORMED, shape)
        return _Candidate(mode, self.macs, prefix, sent, delivery_id, int(value))


@dataclass(slots=True)
class _UploadPost(_Signed):
    mode: str = "upload-post"

    headers: tuple[bytes, ...] = (_UP_SIGNATURE, _UP_TIMESTAMP)

    def begin(self, found: Found, path_token: str | None, now: float) -> Failed | _Candidate:
        raw_signature = found.get(_UP_SIGNATURE, [])
        timestamp = _only(found, _UP_TIMESTAMP)
        if not raw_signature and timestamp is None:
            return Failed(self.mode, Reason.MISSING, "no X-Upload-Post-Signature header")
        if not raw_signature or timestamp is None:
            missing = "Timestamp" if timestamp is None else "Signature"
            return Failed(self.mode, Reason.MALFORMED, f"X-Upload-Post-{missing} is missing")
        return self._candidate(
            self.mode,
            ("X-Upload-Post-Timestamp", timestamp),
            now,
            signatures.upload_post_signatures(raw_signature),
            "X-Upload-Post-Signature must be sha256=<64 hex>",
            f"{timestamp}.".encode(),
        )


@dataclass(slots=True)
class _StandardWebhooks(_Signed):
    mode: str = "standard-webhooks"

    headers: tuple[bytes, ...] = (_SW_ID, _SW_TIMESTAMP, _SW_SIGNATURE)

    def begin(self, found: Found, path_token: str | None, now: float) -> Failed | _Candidate:
        msg_id = _only(found, _SW_ID)
        timestamp = _only(found, _SW_TIMESTAMP)
        raw_signature = _only(found, _SW_SIGNATURE)
        if msg_id is None and timestamp is None and raw_signature is None:
            return Failed(self.mode, Reason.MISSING, "no webhook-signature header")
        if msg_id is None or timestamp is None or raw_signature is None:
            return Failed(
                self.mode, Reason.MALFORMED, "webhook-id, -timestamp and -signature go together"
            )
        if not _WEBHOOK_ID.match(msg_id):
            return Failed(self.mode, Reason.MALFORMED, "webhook-id must be 1-256 visible ASCII")
        return self._candidate(
            self.mode,
            ("webhook-timestamp", timestamp),
            now,
            signatures.standard_webhooks_signatures(raw_signature),
            "webhook-signature has no v1,<base64 HMAC-SHA256>",
            f"{msg_id}.{timestamp}.".encode(),
            msg_id,
        )


@dataclass(slots=True)
class _Token:
    digests: list[bytes]
    header: bytes
    mode: str = "token"

    @property
    def headers(self) -> tuple[bytes, ...]:
        return (self.header, _DELIVERY_HEADER)

    def begin(self, found: Found, path_token: str | None, now: float) -> Failed | Passed:
        presented = [path_token] if path_token is not None else []
        presented += found.get(self.header, [])[:1]
        if not presented:
            where = self.header.decode("latin-1")
            return Failed(self.mode, Reason.MISSING, f"no token in the path or {where}")
        matched = False
        for token in presented:
            if not token or len(token) > _MAX_TOKEN_LENGTH:
                return Failed(self.mode, Reason.MALFORMED, "the token is empty or too long")
            # Hashing first makes every comparison the same length, so not even that leaks.
            digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
            for known in self.digests:
                matched |= hmac.compare_digest(digest, known)
        if not matched:
            return Failed(self.mode, Reason.BAD_TOKEN, "the token is none of the configured ones")
        return Passed(self.mode, _first(found, _DELIVERY_HEADER))


_Scheme = _UploadPost | _StandardWebhooks | _Token


def _first(found: Found, name: bytes) -> str | None:
    values = found.get(name)
    return values[0] if values else None


@dataclass(slots=True)
class Verifier:
    schemes: list[_Scheme]
    secrets: int = 0
    open: bool = False  # UPHOOKS_VERIFY=none
    modes: list[str] = field(default_factory=list)
    wanted: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        self.wanted = frozenset(
            {_DELIVERY_HEADER, *(name for scheme in self.schemes for name in scheme.headers)}
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Verifier:
        """Prepare every key once; refuse to start on a configuration that cannot work."""
        modes = list(settings.verify)
        if modes == ["none"]:
            return cls([], 0, True, modes)
        signing = [mode for mode in modes if mode != "token"]
        secrets = [s.get_secret_value() for s in settings.secrets] if signing else []
        if signing and not secrets:
            raise ConfigurationError(
                f"UPHOOKS_VERIFY={','.join(modes)} needs UPHOOKS_SECRETS: the signing secret "
                "(whsec_...) shown in Upload-Post's webhook settings; several comma-separated "
                "while rotating. UPHOOKS_VERIFY=none turns checks off for local development only."
            )
        _check_lengths("UPHOOKS_SECRETS", secrets)
        schemes: list[_Scheme] = []
        tolerance, skew = settings.verify_tolerance_seconds, settings.verify_future_skew_seconds
        if "upload-post" in modes:
            unique = dict.fromkeys(k for s in secrets for k in signatures.upload_post_keys(s))
            schemes.append(_UploadPost(signatures.macs(unique), tolerance, skew))
        if "standard-webhooks" in modes:
            # The standard's libraries take the secret with or without its whsec_ prefix; so do we.
            keys = [k for k in map(signatures.decode_whsec, secrets) if k is not None]
            if not keys:
                raise ConfigurationError(
                    "UPHOOKS_VERIFY=standard-webhooks needs a secret of the form whsec_<base64> "
                    "in UPHOOKS_SECRETS; none of the configured ones is base64"
                )
            schemes.append(_StandardWebhooks(signatures.macs(keys), tolerance, skew))
        if "token" in modes:
            tokens = _tokens(settings, secrets)
            digests = [hashlib.sha256(t.encode()).digest() for t in tokens]
            schemes.append(_Token(digests, settings.token_header.lower().encode("latin-1")))
        return cls(schemes, len(secrets), False, modes)

    @property
    def takes_path_token(self) -> bool:
        return "token" in self.modes

    def begin(
        self, headers: Headers, path_token: str | None = None, now: float | None = None
    ) -> Verdict | Pending:
        """Judge what the headers (and a path token) allow; a signature still needs the body."""
        found: dict[bytes, list[str]] = {}
        wanted = self.wanted
        for name, value in headers.raw:
            if name in wanted:
                found.setdefault(name, []).append(value.decode("latin-1"))
        if self.open:
            return Passed("none", _first(found, _DELIVERY_HEADER))
        now = time.time() if now is None else now
        candidates: list[_Candidate] = []
        worst: Failed | None = None
        for scheme in self.schemes:
            outcome = scheme.begin(found, path_token, now)
            if isinstance(outcome, Passed):
                return outcome
            if isinstance(outcome, _Candidate):
                candidates.append(outcome)
            elif worst is None or outcome.reason > worst.reason:
                worst = outcome
        if candidates:
            return Pending(candidates, self.secrets)
        assert worst is not None  # from_settings never builds a verifier without a scheme
        return worst

    def check(
        self,
        headers: Headers,
        body: bytes,
        path_token: str | None = None,
        now: float | None = None,
    ) -> Verdict:
        """Both steps at once, for callers that already hold the body."""
        verdict = self.begin(headers, path_token, now)
        return verdict.finish(body) if isinstance(verdict, Pending) else verdict


def _check_lengths(setting: str, values: list[str]) -> None:
    for number, value in enumerate(values, 1):
        if len(value) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"secret #{number} in {setting} is shorter than {MIN_SECRET_LENGTH} characters; "
                "use the provider's whsec_... secret, or a token from "
                "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )


def _tokens(settings: Settings, signing_secrets: list[str]) -> list[str]:
    """Token mode's tokens: UPHOOKS_TOKENS, never a signing secret.

    Before UPHOOKS_TOKENS existed, token mode read UPHOOKS_SECRETS; that still works when token is
    the only mode (nothing is signed then), with a warning. Beside a signing mode it would make
    the signing secret a URL token, so the start-up stops instead.
    """
    tokens = [t.get_secret_value() for t in settings.tokens]
    if not tokens:
        if signing_secrets or not settings.secrets:
            raise ConfigurationError(
                "UPHOOKS_VERIFY includes token but UPHOOKS_TOKENS is empty: set UPHOOKS_TOKENS "
                "to the token(s) in your webhook URL or header (random, e.g. `python -c 'import "
                "secrets; print(secrets.token_urlsafe(32))'`). UPHOOKS_SECRETS holds signing "
                "secrets, which are never accepted as tokens."
            )
        log.warning(
            "token mode reads its tokens from UPHOOKS_SECRETS: rename the variable to "
            "UPHOOKS_TOKENS (UPHOOKS_SECRETS is for signing secrets)"
        )
        tokens = [s.get_secret_value() for s in settings.secrets]
    _check_lengths("UPHOOKS_TOKENS", tokens)
    for number, token in enumerate(tokens, 1):
        if token.startswith("whsec_") or token in signing_secrets:
            raise ConfigurationError(
                f"token #{number} is a signing secret (whsec_... or one of UPHOOKS_SECRETS): a "
                "signing secret must never travel as a URL token, where logs and proxies see it. "
                "Use a random token of its own in UPHOOKS_TOKENS."
            )
    return tokens
