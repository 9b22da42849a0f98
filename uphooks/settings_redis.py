"""Settings of the Redis every process shares: where it is (a URL, or Redis Sentinel), the key
prefix and queue, and how many replicas must hold a delivery before it is acknowledged.
Part of :class:`uphooks.settings.Settings`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from uphooks.sentinel import SentinelTarget, sentinel_target
from uphooks.settings_values import comma_list


class RedisSettings(BaseModel):
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

    _split_sentinels = field_validator("redis_sentinels", mode="before")(comma_list)

    @model_validator(mode="after")
    def _sentinel_is_complete(self) -> RedisSettings:
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
