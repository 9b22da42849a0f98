"""Every setting of the pipeline, in one class: :class:`Settings`.

Nothing else in the project reads ``os.environ``. Values come from ``UPHOOKS_*`` variables, a
``.env`` file, or (for the Redis address only) the conventional ``REDIS_URL``.

The class is put together from one part per concern, each in its own module with its checks:
Redis (``settings_redis.py``), the ingress (``settings_ingress.py``), the workers
(``settings_workers.py``), operations (``settings_operations.py``), the operator console
(``settings_console.py``); and here the built-in handlers'.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from uphooks.settings_console import ConsoleSettings
from uphooks.settings_ingress import IngressSettings
from uphooks.settings_operations import OperationsSettings
from uphooks.settings_redis import RedisSettings
from uphooks.settings_workers import WorkerSettings


# pydantic takes the parts' fields from the last base to the first: Redis, ingress, workers,
# operations, the console, then this class's own.
class Settings(
    ConsoleSettings,
    OperationsSettings,
    WorkerSettings,
    IngressSettings,
    RedisSettings,
    BaseSettings,
):
    model_config = SettingsConfigDict(
        env_prefix="UPHOOKS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # Validation errors must never echo UPHOOKS_SECRETS back.
        hide_input_in_errors=True,
    )

    # --- Built-in handlers (handlers/telegram.py, forward.py, sql.py; see docs/handlers.md).
    # Each runs when enabled here or when its module is named in UPHOOKS_HANDLER_MODULES; a worker
    # refuses to start when an enabled one lacks a required setting. ``*_queue`` gives one its own
    # Celery queue (start workers for it with `uphooks worker -Q <queue>`). Lists are
    # comma-separated; ``*_events`` takes event names or "*".
    telegram_enabled: bool = False
    telegram_bot_token: SecretStr | None = None
    telegram_chat_id: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_events: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    telegram_platforms: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # true: only successful uploads; false: only failed ones (account events then never match).
    telegram_success: bool | None = None
    telegram_timeout_seconds: float = 10.0
    telegram_queue: str | None = None
    # Targets: "https://host/path" or "name=https://host/path"; each is a handler of its own.
    forward_enabled: bool = False
    forward_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    forward_secret: SecretStr | None = None  # whsec_<base64>, Standard Webhooks
    forward_events: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    forward_timeout_seconds: float = 10.0
    forward_queue: str | None = None
    sql_enabled: bool = False
    sql_url: str = "sqlite:///var/uphooks.sqlite3"
    sql_queue: str | None = None

    # Built-in upload_post_retry handler (handlers/upload_post_retry.py): a failed upload whose
    # error matches one of these patterns (regular expressions, case-insensitive; separated
    # by ";;") is retried through the API, at most upload_post_retry_max times per upload.
    upload_post_retry_enabled: bool = False
    upload_post_retry_patterns: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            r"time(d)?[ -]?out",
            r"temporar",
            r"rate.?limit|too many requests",
            r"try again",
            r"\b50[0234]\b|internal (server )?error|service unavailable|bad gateway",
            r"network|connection (reset|refused|error)",
        ]
    )
    upload_post_retry_max: int = Field(default=2, ge=1)
    upload_post_retry_queue: str | None = None

    @field_validator("upload_post_retry_patterns", mode="before")
    @classmethod
    def _split_patterns(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(";;") if part.strip()]
        return value

    @field_validator(
        "telegram_events", "telegram_platforms", "forward_urls", "forward_events", mode="before"
    )
    @classmethod
    def _split_builtin_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
