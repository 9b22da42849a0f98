"""Every setting of the pipeline, in one class: :class:`Settings`.

Nothing else in the project reads ``os.environ``. Values come from ``UPHOOKS_*`` variables, a
``.env`` file, or (for the Redis address only) the conventional ``REDIS_URL``.

The class is put together from one part per concern, each in its own module with its checks:
Redis (``settings_redis.py``), the ingress (``settings_ingress.py``), the workers
(``settings_workers.py``), operations (``settings_operations.py``), the operator console
(``settings_console.py``); what they share is in ``settings_values.py``. The built-in handlers
have settings classes of their own, in their plugins.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict

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

    # Built-in handlers: ordinary plugins with settings classes of their own and the variable
    # names they always had (docs/handlers.md): handlers/telegram.py (UPHOOKS_TELEGRAM_*),
    # handlers/forward.py (UPHOOKS_FORWARD_*), handlers/sql_settings.py (UPHOOKS_SQL_*),
    # handlers/upload_post_retry.py (UPHOOKS_UPLOAD_POST_RETRY_*).


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
