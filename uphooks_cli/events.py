"""``uphooks events``: deliveries received lately, every handler's outcome (docs/operations.md)."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import click

from uphooks.keys import Keys
from uphooks.redis import sync_client
from uphooks.settings import get_settings
from uphooks_cli.eventlog import EventFilter, EventLog, fmt_time, parse_time
from uphooks_cli.output import echo_json, json_option, listed


def _event_log() -> EventLog:
    settings = get_settings()
    return EventLog(sync_client(settings), Keys(settings.key_prefix))


def _time_option(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.group()
def events() -> None:
    """Deliveries received lately and what every handler did with them.

    Kept for UPHOOKS_DEDUP_TTL_SECONDS (default 7 days), then pruned automatically.
    """


@events.command("ls")
@click.option("--event", help="only this event name")
@click.option("--platform", help="only deliveries for this platform")
@click.option("--profile", help="only this profile_username")
@click.option(
    "--status",
    type=click.Choice(["dead", "retrying", "pending", "done"]),
    help="overall: dead (a handler gave up), retrying, pending (not settled yet), done",
)
@click.option("--handler", help="only deliveries this handler (a glob) ran on")
@click.option("--since", help="received after: 15m, 2h, 7d, unix seconds or ISO 8601")
@click.option("--until", help="received before (same forms)")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@json_option()
def events_ls(
    event: str | None,
    platform: str | None,
    profile: str | None,
    status: str | None,
    handler: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List recent deliveries, newest first, with every handler's outcome."""
    flt = EventFilter(
        event=event,
        platform=platform,
        profile=profile,
        status=status,
        handler=handler,
        since=_time_option(since),
        until=_time_option(until),
    )
    rows = [d.summary() for d in islice(_event_log().iter(flt), limit)]
    if listed(rows, as_json, "no deliveries match"):
        return
    for row in rows:
        click.echo(
            f"{fmt_time(row['received_at'])}  {row['status']:<8}  {row['event']}  "
            f"{row['platform'] or '-'}  {row['profile'] or '-'}  {row['key']}"
            + ("  [reconciled]" if row.get("source") == "reconciled" else "")
        )
        for h in row["handlers"]:
            click.echo(f"    {_outcome_text(h)}")


def _outcome_text(h: dict[str, Any]) -> str:
    text = f"{h['handler']}: {h['state']}"
    if h.get("attempt"):
        text += f" (attempt {h['attempt']})"
    if h["state"] == "retrying" and h.get("next_at"):
        text += f", next attempt {fmt_time(h['next_at'])}"
    if h.get("error") and h["state"] != "done":
        text += f": {h['error']}"
    return text


@events.command("show")
@click.argument("key")
@json_option()
def events_show(key: str, as_json: bool) -> None:
    """Show one delivery: headers, body and every handler's outcome."""
    delivery = _event_log().get(key)
    if delivery is None:
        raise click.ClickException(
            f"no delivery {key!r}: it never arrived or is older than UPHOOKS_DEDUP_TTL_SECONDS; "
            "`uphooks events ls` lists what is kept"
        )
    data = delivery.full()
    if as_json:
        echo_json(data)
        return
    click.echo(f"key:      {data['key']}")
    click.echo(f"event:    {data['event']}")
    click.echo(f"received: {fmt_time(data['received_at'])}")
    click.echo(f"status:   {data['status']}")
    click.echo(f"source:   {data['source']}")
    click.echo("handlers:" + ("" if data["handlers"] else " none yet"))
    for h in data["handlers"]:
        click.echo(f"    {_outcome_text(h)}")
    click.echo("headers:")
    for name, value in sorted(data["headers"].items()):
        click.echo(f"    {name}: {value}")
    click.echo(f"body: {json.dumps(data['body'], indent=2)}")
