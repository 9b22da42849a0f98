"""How a command prints for a machine: with ``--json``, one JSON document (indented) on stdout
instead of the lines a person reads."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_option(help: str = "machine-readable output") -> Callable[[F], F]:
    """The ``--json`` flag, handed to the command as ``as_json``."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


def listed(rows: list[dict[str, Any]], as_json: bool, none: str) -> bool:
    """Print ``rows`` as one JSON list with ``--json``, else ``none`` when there are none; True
    when that was all (False: the command prints the rows as lines)."""
    if as_json:
        echo_json(rows)
        return True
    if not rows:
        click.echo(none)
        return True
    return False
