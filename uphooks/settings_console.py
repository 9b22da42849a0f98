"""Settings of the operator console (console/, docs/console.md): ``uphooks console``, its own
process and port. Part of :class:`uphooks.settings.Settings`."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import NoDecode

from uphooks.settings_values import HOUR, base_url, comma_list


class ConsoleSettings(BaseModel):
    # Off until a user or a token is set: the console refuses to start without one.
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8002, ge=1, le=65535)
    # Users who sign in with a password: name:role:hash, comma-separated; role is operator or
    # read-only; hash from `uphooks console hash-password` (scrypt; the password is never kept).
    console_users: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # Sign-in tokens: name:role:token, comma-separated; a token of 32 characters or more.
    console_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    # A session lasts this long after sign-in; signing out or removing the user ends it sooner.
    console_session_seconds: int = Field(default=8 * HOUR, ge=60)
    # Cookies only over HTTPS (the __Host- prefix). Off only for plain http on loopback.
    console_secure_cookies: bool = True
    # Where browsers reach the console (https://ops.example.com), behind a reverse proxy: form
    # posts are accepted from this origin only. Unset: the origin of the request's Host header.
    console_public_url: str | None = None
    # The path prefix the proxy serves the console under (/console) and strips, if any.
    console_root_path: str = ""
    # Failed sign-ins allowed per user name and per source address in 15 minutes.
    console_login_attempts: int = Field(default=10, ge=1)
    # The /metrics the Overview charts sample, comma-separated (the ingress's admin listener,
    # workers' UPHOOKS_WORKER_METRICS_PORT); empty: http://<admin_host>:<admin_port>/metrics.
    console_metrics_urls: Annotated[list[str], NoDecode] = Field(default_factory=list)
    console_sample_seconds: float = Field(default=10.0, ge=1)
    # Bulk replay runs in the console process in chunks of this many dead letters, with this
    # pause between chunks (room for the pipeline), checking for a cancel between chunks.
    console_bulk_chunk: int = Field(default=200, ge=1, le=5000)
    console_bulk_pause_seconds: float = Field(default=0.05, ge=0)

    _public_url = field_validator("console_public_url")(base_url)
    _urls = field_validator("console_metrics_urls", mode="before")(comma_list)

    @field_validator("console_users", "console_tokens", mode="before")
    @classmethod
    def _split_credentials(cls, value: object) -> object:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        return comma_list(value)

    @field_validator("console_users", "console_tokens")
    @classmethod
    def _credentials_are_well_formed(
        cls, value: list[SecretStr], info: ValidationInfo
    ) -> list[SecretStr]:
        setting = f"UPHOOKS_{(info.field_name or '').upper()}"
        for n, entry in enumerate(value, start=1):
            # Errors name the entry by position, never by content: it holds a secret.
            name, role, secret = [*entry.get_secret_value().split(":", 2), "", ""][:3]
            if not name or role not in ("operator", "read-only") or not secret:
                what = "hash" if setting.endswith("USERS") else "token"
                raise ValueError(
                    f"{setting} entry {n} is not name:role:{what} with role operator or read-only"
                )
            if setting.endswith("USERS") and not secret.startswith("scrypt."):
                raise ValueError(
                    f"{setting} entry {n}: the password must be stored hashed; make the hash "
                    "with `uphooks console hash-password`"
                )
            if setting.endswith("TOKENS") and len(secret) < 32:
                raise ValueError(
                    f"{setting} entry {n}: a token needs 32 characters or more (e.g. "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
                )
        return value
