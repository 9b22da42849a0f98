"""One clear line, no traceback, for the failures a user fixes: settings that do not validate,
a Redis that does not answer, a configuration the pipeline refuses.

:class:`FriendlyGroup` turns them into ``click.ClickException`` (``Error: ...``, exit 1) for every
command under it; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import click
import redis
from pydantic import ValidationError

from uphooks.errors import ConfigurationError
from uphooks.settings import get_settings
from uphooks_cli.devstate import redacted

P = ParamSpec("P")
R = TypeVar("R")


def settings_problem(exc: ValidationError) -> str:
    """``invalid settings: UPHOOKS_X: what is wrong; ...`` from the Settings' validation error."""
    parts = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        where = ".".join(str(part) for part in error["loc"])
        name = where.upper() if where.upper().startswith(("UPHOOKS_", "REDIS_URL")) else ""
        if where and not name:
            name = f"UPHOOKS_{where.upper()}"
        parts.append(f"{name}: {message}" if name and name not in message else message)
    return (
        f"invalid settings: {'; '.join(parts)} (from the environment or .env; every setting is "
        "described in uphooks/settings*.py)"
    )


def redis_unreachable(exc: Exception) -> str:
    url = redacted(get_settings().redis_url)
    reason = (
        str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else type(exc).__name__
    )
    return (
        f"cannot reach Redis at {url}: {reason}. Start the development stack with `make run` "
        "(the CLI finds it from this folder), or set REDIS_URL to your Redis"
    )


def one_line(exc: BaseException) -> str | None:
    """The line to print for a failure the user can fix, or None for anything else."""
    # Here, not at the top: every command loads this module, few of them kombu.
    from kombu.exceptions import OperationalError

    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return settings_problem(exc)
    if isinstance(exc, ConfigurationError):
        return str(exc)
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OperationalError):
        return redis_unreachable(exc)
    return None


class FriendlyGroup(click.Group):
    """A click group whose commands answer user-fixable failures with one line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            line = one_line(exc)
            if line is None:
                raise
            raise click.ClickException(line) from exc


def api_errors(func: Callable[P, R]) -> Callable[P, R]:
    """A command calling Upload-Post's API: its refusals (a wrong key, an unknown id) are one
    line, as ProviderAPIError already words them."""

    from uphooks.provider_api import ProviderAPIError  # only the API commands need httpx

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ProviderAPIError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper
