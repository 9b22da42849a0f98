"""Every setting of the pipeline, in one class.

Nothing else in the project reads ``os.environ``. Values come from ``UPHOOKS_*`` variables, a
``.env`` file, or (for the Redis address only) the conventional ``REDIS_URL``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

HOUR = 3600
DAY = 24 * HOUR


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UPHOOKS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- Redis: the queue, the de-duplication keys, the markers and the dead letters.
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("UPHOOKS_REDIS_URL", "REDIS_URL"),
    )
    key_prefix: str = "uphooks"
    queue: str = "uphooks"

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
    # Retries of a failing handler: exponential backoff with full jitter.
    retry_max_attempts: int = 12
    retry_base_delay_seconds: float = 10.0
    retry_max_delay_seconds: float = 2 * HOUR
    # A retry further away than this waits in hops of at most this long (see workers/retrying.py).
    retry_hop_seconds: int = 900
    # Dead letters are kept this long.
    dlq_retention_seconds: int = 30 * DAY

    # --- Logs
    log_level: str = "INFO"
    log_personal_data: bool = False

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
        if self.retry_hop_seconds + self.task_time_limit_seconds >= vt:
            raise ValueError(
                "UPHOOKS_RETRY_HOP_SECONDS + UPHOOKS_TASK_TIME_LIMIT_SECONDS must stay below "
                f"UPHOOKS_VISIBILITY_TIMEOUT_SECONDS ({vt}): otherwise kombu redelivers a "
                "waiting or running message to a second worker. Raise the visibility timeout "
                "or lower the others."
            )
        if self.ack_timeout_seconds >= 10:
            raise ValueError(
                "UPHOOKS_ACK_TIMEOUT_SECONDS must stay below the sender's ~10 s timeout"
            )
        return self

    @property
    def lease_ttl_ms(self) -> int:
        """How long a (event, handler) lease lives: a killed holder's lease frees itself."""
        return (self.task_time_limit_seconds + 30) * 1000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
