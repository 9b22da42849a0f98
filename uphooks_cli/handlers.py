"""``uphooks handlers``: the handlers a worker would load, as the worker sees them."""

from __future__ import annotations

import json

import click

from uphooks.errors import ConfigurationError
from uphooks.settings import get_settings
from workers.plugins import describe, load_handlers


@click.command("handlers")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_handlers(as_json: bool) -> None:
    """Show every handler the worker would load: where it came from, the events and filters it
    takes, its queue and its retry policy (defaults from the UPHOOKS_* settings filled in)."""
    settings = get_settings()
    try:
        loaded = load_handlers(settings)
    except ConfigurationError as exc:
        raise click.ClickException(f"a worker would not start: {exc}") from exc
    rows = [describe(spec, settings, loaded.sources[spec.name]) for spec in loaded.router]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no handlers: set UPHOOKS_HANDLER_MODULES or install a plugin package")
    for row in rows:
        filters = " ".join(f"{k}={','.join(map(str, v))}" for k, v in row["filters"].items())
        backoff = row["backoff"]
        limit = (
            "the message's soft limit"
            if "time_limit" in row["defaults"]
            else f"{row['time_limit_seconds']:g}s per call"
        )
        click.echo(
            f"{row['name']}\n"
            f"    from:    {row['source']}\n"
            f"    events:  {', '.join(row['events'])}{'  where ' + filters if filters else ''}\n"
            f"    queue:   {row['queue']}\n"
            f"    retries: {row['max_attempts']} attempts, backoff "
            f"{backoff['base_seconds']:g}s doubling up to {backoff['max_seconds']:g}s\n"
            f"    limit:   {limit}"
        )
        if row["async"]:
            click.echo(f"    async:   up to {row['concurrency']} calls at once per process")
        if row["rate"]:
            rates = ", ".join(f"{bucket} {rate}" for bucket, rate in row["rate"].items())
            click.echo(f"    rate:    {rates} (across all workers)")
