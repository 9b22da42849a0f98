"""``uphooks dlq``: dead letters listed, shown, replayed (workers/ledger.py) and purged."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TypeVar

import click

from uphooks.keys import Keys
from uphooks.redis import sync_client
from uphooks.settings import get_settings
from uphooks_cli.eventlog import fmt_time
from uphooks_cli.output import echo_json, json_option, listed
from workers.deadletter import DeadLetter, DeadLetters, Filter
from workers.ledger import Ledger

F = TypeVar("F", bound=Callable[..., None])


def _dead_letters() -> DeadLetters:
    settings = get_settings()
    return DeadLetters(
        sync_client(settings), Keys(settings.key_prefix), settings.dlq_retention_seconds
    )


def _filter(event: str | None, handler: str | None, platform: str | None) -> Filter:
    return Filter(event=event, handler=handler, platform=platform)


_filters = [
    click.option("--event", help="only this event name"),
    click.option("--handler", help="only handlers matching this glob"),
    click.option("--platform", help="only deliveries for this platform"),
]


def with_filters(func: F) -> F:
    for option in reversed(_filters):
        func = option(func)
    return func


@click.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq.command("ls")
@with_filters
@json_option()
def dlq_ls(event: str | None, handler: str | None, platform: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    rows = [dl.summary() for dl in _dead_letters().iter(_filter(event, handler, platform))]
    if listed(rows, as_json, "no dead letters"):
        return
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["dead_at"]))
        click.echo(
            f"{row['id']}  {row['event']}  attempts={row['attempts']}  {when}Z  {row['error']}"
        )


@dlq.command("show")
@click.argument("entry_id")
@json_option()
def dlq_show(entry_id: str, as_json: bool) -> None:
    """Show one dead letter: the delivery, the error and its traceback."""
    dl = _dead_letter(_dead_letters(), entry_id)
    data = dl.summary() | {"traceback": dl.traceback, "record": json.loads(dl.record)}
    if as_json:
        echo_json(data)
        return
    for key, value in data.items():
        if key.endswith("_at") and isinstance(value, int | float):
            value = f"{fmt_time(value)} ({value:.0f})"
        if key not in ("traceback", "record"):
            click.echo(f"{key}: {value}")
    click.echo(f"delivery: {json.dumps(data['record'], indent=2)}")
    click.echo(f"traceback:\n{dl.traceback}")


def _dead_letter(store: DeadLetters, entry_id: str) -> DeadLetter:
    dl = store.get(entry_id)
    if dl is None:
        raise click.ClickException(f"no dead letter {entry_id!r}; `uphooks dlq ls` lists them")
    return dl


def _selected(entry_id: str | None, all_: bool, flt: Filter) -> list[DeadLetter]:
    store = _dead_letters()
    if entry_id:
        return [_dead_letter(store, entry_id)]
    if not all_ and flt == _filter(None, None, None):
        raise click.UsageError("name an entry id, give filters, or pass --all")
    return list(store.iter(flt))


def _ledger() -> Ledger:
    settings = get_settings()
    return Ledger(sync_client(settings), settings)


@dlq.command("replay")
@click.argument("entry_id", required=False)
@click.option("--all", "all_", is_flag=True, help="every dead letter matching the filters")
@with_filters
def dlq_replay(
    entry_id: str | None, all_: bool, event: str | None, handler: str | None, platform: str | None
) -> None:
    """Run the failed handler again for one dead letter, or all that match."""
    ledger = _ledger()
    chosen = _selected(entry_id, all_, _filter(event, handler, platform))
    outcomes: dict[str, int] = {}
    with click.progressbar(chosen, label="replaying", show_pos=True, file=sys.stderr) as bar:
        for dl in bar:
            result = ledger.replay(dl.key, dl.handler, dl.record)
            outcomes[result] = outcomes.get(result, 0) + 1
    click.echo(f"replayed {outcomes.pop('replayed', 0)} dead letter(s)")
    for result, n in outcomes.items():
        what = "already done meanwhile" if result == "done" else "already under way"
        click.echo(f"{n} not replayed: {what} (entry removed)")


@dlq.command("purge")
@click.argument("entry_id", required=False)
@click.option("--all", "all_", is_flag=True, help="every dead letter matching the filters")
@with_filters
@click.option("--yes", is_flag=True, help="do not ask")
def dlq_purge(
    entry_id: str | None,
    all_: bool,
    event: str | None,
    handler: str | None,
    platform: str | None,
    yes: bool,
) -> None:
    """Delete dead letters for good."""
    store = _dead_letters()
    chosen = _selected(entry_id, all_, _filter(event, handler, platform))
    if not yes:
        click.confirm(f"delete {len(chosen)} dead letter(s)?", abort=True)
    for dl in chosen:
        store.remove(dl.entry_id)
    click.echo(f"purged {len(chosen)} dead letter(s)")
