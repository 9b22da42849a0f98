"""Settings of the ingress: the webhook path, acknowledgement and de-duplication, how a delivery
proves where it comes from (receiver/verify.py, allowed_networks.py, limits.py) and what the
edge allows (receiver/connections.py, throttle.py). Part of :class:`uphooks.settings.Settings`;
docs/security.md says why each default is what it is."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import NoDecode

from uphooks.settings_values import DAY, comma_list


class IngressSettings(BaseModel):
    # --- Ingress
    webhook_path: str = "/webhooks/upload-post"
    # The sender gives up after ~10 s; we answer 503 well before that.
    ack_timeout_seconds: float = 3.0
    max_body_bytes: int = 1024 * 1024
    # Group commit: concurrent deliveries share one Redis round trip and one Celery message.
    enqueue_batch_max: int = 64
    # De-duplication of deliveries. The sender retries for ~8.5 h and keeps its delivery log for
    # 7 days (a manual re-send from its dashboard can come that late), so the default covers both.
    dedup_ttl_seconds: int = 7 * DAY
    # New deliveries are answered 503 (retried) while Redis's used_memory is above this share of
    # its maxmemory, so the workers keep the rest: Redis refuses their writes too once it is full
    # (receiver/headroom.py, docs/operations.md). No check when Redis has no maxmemory.
    redis_memory_limit_ratio: float = Field(default=0.9, gt=0, le=1)
    # How often the ingress reads INFO memory for that check (never per request).
    redis_memory_poll_seconds: float = Field(default=0.5, gt=0, le=10)

    # --- Ingress security (receiver/verify.py, allowed_networks.py, limits.py; docs/security.md)
    # How a delivery proves it comes from the sender, comma-separated; any one passing is enough:
    # upload-post, standard-webhooks, token, none. ``none`` is for development only.
    verify: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["upload-post"])
    # Signing secrets or tokens, comma-separated. Several at once while a secret is rotated.
    secrets: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # How old a signed timestamp may be. Wide on purpose: the sender retries for ~8.5 h and may not
    # refresh the timestamp; replays inside the window are stopped by the de-duplication window.
    verify_tolerance_seconds: int = DAY
    # How far ahead of our clock a signed timestamp may be (the two clocks' skew).
    verify_future_skew_seconds: int = 300
    # Answer to a well-formed, fresh delivery that matches none of our secrets: 503 (the sender
    # retries for hours, time to add a rotated secret) or 401 (final: that delivery is lost).
    verify_mismatch_status: int = 503
    # The header that carries the secret in ``token`` mode (``<webhook_path>/<token>`` works too).
    token_header: str = "x-uphooks-token"
    # Source networks allowed to post deliveries (CIDR, comma-separated); empty allows any.
    allowed_networks: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    # Reverse proxies whose X-Forwarded-For is believed (CIDR, comma-separated).
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    # Webhook requests in progress at once, per process; one more is answered 503 at once.
    max_concurrent_requests: int = Field(default=256, ge=1)
    # Serve the ingress's OpenAPI description at GET /openapi.json (on the admin listener).
    serve_openapi: bool = True
    # Token mode's tokens, comma-separated; never the signing secrets (UPHOOKS_SECRETS).
    tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # --- The edge (receiver/connections.py, throttle.py; docs/security.md, "What the ingress
    # does alone"). The public listener serves the webhook path and /healthz only; metrics,
    # OpenAPI and /readyz go on the admin listener (0 turns it off). In Kubernetes bind the pod
    # IP (0.0.0.0) and let only the kubelet and Prometheus reach that port.
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8001, ge=0, le=65535)
    # A request's head must arrive within this long of the connection opening (or of the
    # previous answer); its body within this long of the head. Then 408 and the connection ends.
    head_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    # An open connection with no request in it is closed after this long.
    keepalive_timeout_seconds: int = Field(default=5, ge=1)
    # Request line plus headers; more is answered 431 (real deliveries send about 1 KB).
    max_head_bytes: int = Field(default=32 * 1024, ge=1024)
    # Open connections per process, and per source address (an IPv6 /64 counts as one source;
    # UPHOOKS_TRUSTED_PROXIES are not capped per source). One more is closed at once.
    max_connections: int = Field(default=2048, ge=1)
    max_connections_per_source: int = Field(default=64, ge=1)
    # Refused requests (401/403/413/415, 503 for an unknown secret) each source may cost, per
    # process: a burst, then this many per second. Past it the source is throttled: its refusals
    # are answered 429, and bodies above throttled_body_bytes 429 without being read. Valid
    # deliveries never spend the budget (docs/security.md, "Throttling refused requests").
    refusal_burst: int = Field(default=20, ge=1)
    refusal_rate_per_second: float = Field(default=1.0, gt=0)
    throttled_body_bytes: int = Field(default=64 * 1024, ge=1024)

    @field_validator("verify", mode="before")
    @classmethod
    def _split_modes(cls, value: object) -> object:
        return comma_list(value.lower() if isinstance(value, str) else value)

    @field_validator("verify")
    @classmethod
    def _known_modes(cls, value: list[str]) -> list[str]:
        known = ("upload-post", "standard-webhooks", "token", "none")
        unknown = [mode for mode in value if mode not in known]
        if unknown or not value:
            raise ValueError(
                f"UPHOOKS_VERIFY must name one or more of {', '.join(known)} (comma-separated); "
                f"got {', '.join(unknown) or 'nothing'}"
            )
        if "none" in value and len(value) > 1:
            raise ValueError("UPHOOKS_VERIFY=none accepts everything: it cannot be combined")
        return list(dict.fromkeys(value))

    @field_validator("secrets", "tokens", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        return comma_list(value.get_secret_value() if isinstance(value, SecretStr) else value)

    @field_validator("allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        parts = comma_list(value)
        if isinstance(value, str) and isinstance(parts, list):
            try:
                return [ip_network(part, strict=False) for part in parts]
            except ValueError as exc:
                raise ValueError(f"expected CIDR networks, comma-separated: {exc}") from exc
        return value

    # A field validator, not a model one: its error shows this value only, never the secrets.
    @field_validator("verify_future_skew_seconds")
    @classmethod
    def _replay_window_fits_the_dedup_window(cls, skew: int, info: ValidationInfo) -> int:
        tolerance = info.data.get("verify_tolerance_seconds")
        dedup = info.data.get("dedup_ttl_seconds")
        if tolerance is None or dedup is None:
            return skew  # their own errors are reported
        if tolerance <= 0 or skew < 0:
            raise ValueError(
                "UPHOOKS_VERIFY_TOLERANCE_SECONDS must be positive and "
                "UPHOOKS_VERIFY_FUTURE_SKEW_SECONDS not negative"
            )
        if tolerance + skew > dedup:
            raise ValueError(
                "UPHOOKS_VERIFY_TOLERANCE_SECONDS + UPHOOKS_VERIFY_FUTURE_SKEW_SECONDS "
                f"({tolerance + skew}) must not exceed UPHOOKS_DEDUP_TTL_SECONDS ({dedup}): a "
                "signed delivery replayed after its de-duplication key expired would be "
                "accepted again. Lower the tolerance or raise the de-duplication window."
            )
        return skew

    @field_validator("verify_mismatch_status")
    @classmethod
    def _retry_or_final(cls, value: int) -> int:
        if value not in (401, 503):
            raise ValueError("UPHOOKS_VERIFY_MISMATCH_STATUS must be 503 (retried) or 401 (final)")
        return value

    @field_validator("webhook_path")
    @classmethod
    def _path_starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("UPHOOKS_WEBHOOK_PATH must start with '/', e.g. /webhooks/upload-post")
        return value

    @model_validator(mode="after")
    def _answered_before_the_sender_gives_up(self) -> IngressSettings:
        if self.ack_timeout_seconds >= 10:
            raise ValueError(
                "UPHOOKS_ACK_TIMEOUT_SECONDS must stay below the sender's ~10 s timeout"
            )
        return self
