"""What the built-in handlers' own settings classes share: how they read the environment.

Each built-in is an ordinary plugin with its own pydantic-settings class and prefix
(``UPHOOKS_TELEGRAM_*``, ``UPHOOKS_FORWARD_*``), like examples/uphooks-example; the variable
names are the ones the core settings used to have, so nothing changes for an operator.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


#: A list given as one comma-separated variable (``a,b,c``).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]


def builtin_config(prefix: str) -> SettingsConfigDict:
    """The settings config of a built-in: its prefix, the ``.env`` file, secrets never echoed."""
    return SettingsConfigDict(
        env_prefix=prefix,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        hide_input_in_errors=True,
    )


class BuiltinSettings(BaseSettings):
    """What every built-in's settings have: its switch and the Celery queue its handlers run on
    (None: the default one). Each subclass sets ``model_config = builtin_config(prefix)``."""

    enabled: bool = False
    queue: str | None = None
