"""Settings for operating the pipeline: logs, metrics, the workers' heartbeat and readiness,
traces, notifications, Upload-Post's API and reconciliation (docs/operations.md,
docs/reconciliation.md). Part of :class:`uphooks.settings.Settings`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator

from uphooks.settings_values import DAY, base_url


class OperationsSettings(BaseModel):
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
    # Notifications (workers/notify.py): a Telegram message (the telegram plugin's
    # UPHOOKS_TELEGRAM_BOT_TOKEN and _API_URL, to notify_telegram_chat_id) and/or a signed POST
    # (UPHOOKS_FORWARD_SECRET, when set) to notify_webhook_url, when handlers dead-letter or the
    # oldest overdue item in the ledger passes notify_overdue_seconds; at most one message per
    # kind per notify_min_interval_seconds across all workers, checked every
    # notify_check_seconds.
    notify_telegram_chat_id: str | None = None
    notify_webhook_url: str | None = None
    notify_overdue_seconds: float = Field(default=300.0, gt=0)
    notify_min_interval_seconds: float = Field(default=600.0, gt=0)
    notify_check_seconds: float = Field(default=15.0, gt=0)

    _base_urls = field_validator("upload_post_api_url", "public_url")(base_url)

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
