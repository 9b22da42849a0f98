"""Every setting of the pipeline, in one class.

Nothing else in the project reads ``os.environ``. Values come from ``UPHOOKS_*`` variables, a
``.env`` file, or (for the Redis address only) the conventional ``REDIS_URL``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from uphooks.sentinel import SentinelTarget, sentinel_target

HOUR = 3600
DAY = 24 * HOUR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UPHOOKS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Validation errors must never echo UPHOOKS_SECRETS back.
        hide_input_in_errors=True,
    )

    # --- Redis: the queue, the de-duplication keys, the markers and the dead letters.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("UPHOOKS_REDIS_URL", "REDIS_URL"),
    )
    key_prefix: str = "uphooks"
    queue: str = "uphooks"
    # Redis Sentinel (uphooks/sentinel.py, docs/scaling.md): the sentinels as host:port,
    # comma-separated, and the master's name; or a sentinel:// URL above. The master's password:
    # in the URL or here; the sentinels' own password, if they have one, apart.
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    redis_master_name: str | None = None
    redis_password: SecretStr | None = None
    redis_sentinel_password: SecretStr | None = None
    # Acknowledged means replicated, when > 0: the ingress answers 2xx only once this many
    # replicas have the delivery (WAIT, or WAITAOF where Redis has it), else 503 within
    # ack_timeout_seconds (receiver/replicas.py).
    ack_replicas: int = Field(default=0, ge=0)

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

    # --- Workers
    # Handler modules to import, comma-separated (in addition to the built-in ``log`` handler).
    handler_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    builtin_log_handler: bool = True
    # kombu redelivers a message that stayed unacknowledged this long. Every delay we ask Celery
    # for (countdowns) and every task's hard time limit must stay well below it.
    visibility_timeout_seconds: int = HOUR
    # How often each worker looks for messages whose worker died (unacked past the timeout).
    restore_sweep_seconds: int = 30
    task_soft_time_limit_seconds: int = 240
    task_time_limit_seconds: int = 300
    worker_concurrency: int | None = None
    # A message whose worker died this many times is split up, then dead-lettered (poison).
    poison_max_deliveries: int = 3
    # Retries of a failing handler: exponential backoff with full jitter. A retry waits in Redis
    # (the ledger's schedule, workers/schedule.py), so a delay may be hours long.
    retry_max_attempts: int = 12
    retry_base_delay_seconds: float = 10.0
    retry_max_delay_seconds: float = 2 * HOUR
    # Dead letters are kept this long.
    dlq_retention_seconds: int = 30 * DAY
    # A running handler's lease (workers/leases.py): renewed every third of this while it runs,
    # so a handler may run as long as it needs; a dead worker's pairs are taken over after it.
    lease_seconds: float = Field(default=30.0, ge=1.0)
    # How often every worker moves due work (retries, hand-offs, recoveries) onto its queue.
    schedule_interval_seconds: float = Field(default=1.0, gt=0)
    # A delivery or pair whose message was published but not taken by a worker this long after
    # (lost between Redis and a worker, or waiting in a long queue) is published again; the
    # wait doubles each time for the same item (up to 16x). A copy is harmless (the ledger
    # fences it), so this trades recovery time against extra messages under a long backlog.
    recover_after_seconds: int = Field(default=10 * 60, ge=1)
    # Handlers with ``ordered_by=``: an event starts no sooner than this after it arrived, so an
    # event that happened earlier but arrives up to this much later still runs first
    # (docs/design.md section 9). Latency of ordered handlers against reordering they absorb.
    order_window_seconds: float = Field(default=2.0, ge=0)
    # ``async def`` handlers (workers/aio.py): calls in flight at once per worker process, on its
    # event loop. A message whose async pairs find the process full waits for room (in its slot).
    async_concurrency: int = Field(default=100, ge=1)
    # Sync handlers (without a time_limit) on this many threads of the same runner instead of in
    # the Celery pool slot: their messages are acknowledged when the runs start, as for async
    # ones. 0: off, sync handlers run in the slot that took their message.
    sync_threads: int = Field(default=0, ge=0)

    # --- Logs
    log_level: str = "INFO"
    log_personal_data: bool = False

    # --- Operations (docs/operations.md): the provider's settings API, metrics, logs, heartbeat.
    # Upload-Post's API, for `uphooks upload-post`. The key is never printed.
    upload_post_api_url: str = "https://app.upload-post.com"
    upload_post_api_key: SecretStr | None = None
    upload_post_timeout_seconds: float = 15.0
    # Where the sender reaches this ingress from outside (https://hooks.example.com):
    # `uphooks upload-post set --url` without a value uses <public_url><webhook_path>.
    public_url: str | None = None
    # Prometheus: the ingress serves GET /metrics when enabled; a worker serves its own on
    # worker_metrics_port when set. Per-process files (multiprocess mode) go to a fresh folder
    # under metrics_dir (default: the system temp folder) that the owning process removes.
    metrics_enabled: bool = True
    worker_metrics_port: int | None = None
    # Bound to this host only by default: metrics describe queues and handlers (docs/security.md).
    worker_metrics_address: str = "127.0.0.1"
    metrics_dir: str | None = None
    # "json" (one object per line), "plain", or "auto": plain on a terminal, JSON otherwise.
    log_format: Literal["auto", "json", "plain"] = "auto"
    # Workers write a heartbeat this often; /readyz counts those seen within the stale window,
    # and answers 503 without one only when readyz_requires_worker is set.
    heartbeat_interval_seconds: float = Field(default=5.0, gt=0)
    heartbeat_stale_seconds: float = 30.0
    readyz_requires_worker: bool = False
    # OpenTelemetry traces (uphooks/tracing.py; needs the "tracing" extra): "otlp" sends spans
    # over OTLP/HTTP to tracing_endpoint (empty: the exporter's OTEL_EXPORTER_OTLP_* variables,
    # else http://localhost:4318/v1/traces), "console" prints them; "off" imports nothing.
    tracing: Literal["off", "otlp", "console"] = "off"
    tracing_endpoint: str = ""
    tracing_service_name: str = "uphooks"
    # Notifications (workers/notify.py): a Telegram message (UPHOOKS_TELEGRAM_BOT_TOKEN and
    # _API_URL, handlers/telegram.py, to notify_telegram_chat_id) and/or a signed POST
    # (UPHOOKS_FORWARD_SECRET, when set) to notify_webhook_url, when handlers dead-letter or the
    # oldest overdue item in the ledger passes notify_overdue_seconds; at most one message per
    # kind per notify_min_interval_seconds across all workers, checked every notify_check_seconds.
    notify_telegram_chat_id: str | None = None
    notify_webhook_url: str | None = None
    notify_overdue_seconds: float = Field(default=300.0, gt=0)
    notify_min_interval_seconds: float = Field(default=600.0, gt=0)
    notify_check_seconds: float = Field(default=15.0, gt=0)

    @field_validator("upload_post_api_url", "public_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("heartbeat_stale_seconds")
    @classmethod
    def _stale_after_beats(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("heartbeat_interval_seconds")
        if interval is not None and value < 2 * interval:
            raise ValueError(
                "UPHOOKS_HEARTBEAT_STALE_SECONDS must be at least twice "
                f"UPHOOKS_HEARTBEAT_INTERVAL_SECONDS ({interval}), or one late beat reads as "
                "no worker"
            )
        return value

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
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

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
        if isinstance(value, str | SecretStr):
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            return [part.strip() for part in raw.split(",") if part.strip()]
        return value

    @field_validator("allowed_networks", "trusted_proxies", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return [
                    ip_network(part.strip(), strict=False)
                    for part in value.split(",")
                    if part.strip()
                ]
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

    # --- Built-in handlers (see docs/handlers.md): ordinary plugins with settings classes of their
    # own, the same variable names as before: handlers/telegram.py (UPHOOKS_TELEGRAM_*),
    # handlers/forward.py (UPHOOKS_FORWARD_*), handlers/sql_settings.py (UPHOOKS_SQL_*),
    # handlers/upload_post_retry.py (UPHOOKS_UPLOAD_POST_RETRY_*).
    # Each runs when enabled or when its module is named in UPHOOKS_HANDLER_MODULES; a worker
    # refuses to start when an enabled one lacks a required setting. ``*_queue`` gives one its own
    # Celery queue (start workers for it with `uphooks worker -Q <queue>`).

    # --- Reconciliation (uphooks/reconcile.py; docs/reconciliation.md): results Upload-Post's
    # API knows and no webhook told us about are injected, marked "reconciled". The periodic
    # job runs in the workers, one pass at a time across all of them, every interval.
    reconcile_enabled: bool = False
    reconcile_interval_seconds: float = Field(default=15 * 60, ge=10)
    # A result younger than this is left to its webhook (the sender retries for ~8.5 h, but
    # most deliveries arrive within seconds); older and unaccounted for, it is injected.
    reconcile_grace_seconds: float = Field(default=30 * 60, ge=0)
    # Each pass reads back to the last checkpoint minus this overlap; the first pass this far.
    reconcile_overlap_seconds: float = Field(default=60 * 60, ge=0)
    reconcile_first_lookback_seconds: float = Field(default=DAY, gt=0)
    # Requests to Upload-Post's API one pass (or one watch) may make at most.
    reconcile_request_budget: int = Field(default=50, ge=1)
    # The built-in upload_post_retry handler has settings of its own (UPHOOKS_UPLOAD_POST_RETRY_*,
    # handlers/upload_post_retry.py); it calls the API with the key above.

    @field_validator("handler_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_path")
    @classmethod
    def _path_starts_with_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("UPHOOKS_WEBHOOK_PATH must start with '/', e.g. /webhooks/upload-post")
        return value

    @model_validator(mode="after")
    def _timings_fit_the_visibility_timeout(self) -> Settings:
        vt = self.visibility_timeout_seconds
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise ValueError(
                "UPHOOKS_TASK_SOFT_TIME_LIMIT_SECONDS must be below "
                "UPHOOKS_TASK_TIME_LIMIT_SECONDS so a handler is told to stop before it is killed"
            )
        if self.task_time_limit_seconds >= vt:
            raise ValueError(
                "UPHOOKS_TASK_TIME_LIMIT_SECONDS must stay below "
                f"UPHOOKS_VISIBILITY_TIMEOUT_SECONDS ({vt}): otherwise kombu redelivers a "
                "running message to a second worker. Raise the visibility timeout or lower the "
                "time limit."
            )
        if self.ack_timeout_seconds >= 10:
            raise ValueError(
                "UPHOOKS_ACK_TIMEOUT_SECONDS must stay below the sender's ~10 s timeout"
            )
        return self

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _split_sentinels(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _sentinel_is_complete(self) -> Settings:
        self.sentinel()  # raises ValueError with what to set
        return self

    def sentinel(self) -> SentinelTarget | None:
        """The Sentinel set-up to follow, or None for a plain redis:// or rediss:// URL."""
        return sentinel_target(
            self.redis_url,
            self.redis_sentinels,
            self.redis_master_name,
            self.redis_password.get_secret_value() if self.redis_password else None,
            (
                self.redis_sentinel_password.get_secret_value()
                if self.redis_sentinel_password
                else None
            ),
        )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # The Redis URL may carry a password: repr() and str() show it masked.
        for name, value in super().__repr_args__():
            yield name, masked_url(value) if name == "redis_url" else value


def masked_url(url: str) -> str:
    """``url`` with its password (and a user name standing alone as one) replaced by ``***``,
    for anything printed: logs, errors, CLI output, ``repr(settings)``."""
    if ";" in url:  # sentinel://a;sentinel://b: each part may carry the password
        return ";".join(masked_url(part) for part in url.split(";"))
    url = re.sub(r"([?&])(\w*password)=[^&#]*", r"\1\2=***", url)  # redis-py reads it too
    parts = urlsplit(url)
    if parts.password is None and not parts.username:
        return url
    user = parts.username if parts.password is not None else None
    credentials = f"{user}:***" if user else "***"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
