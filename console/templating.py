"""Filters the templates use: times, ages and URL pieces."""

from __future__ import annotations

import time
from urllib.parse import quote

from jinja2 import Environment

from uphooks_cli.eventlog import fmt_time


def ago(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = time.time() - ts
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def install_filters(env: Environment) -> None:
    env.filters["when"] = fmt_time
    env.filters["ago"] = ago
    env.filters["pathq"] = lambda value: quote(str(value), safe="")
    env.globals["quote"] = quote
