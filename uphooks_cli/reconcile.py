"""``uphooks reconcile``, ``uphooks watch`` and ``uphooks drift``: what Upload-Post's API knows
and no webhook told us (docs/reconciliation.md)."""

from __future__ import annotations

import sys

import click

from receiver.inject import inject
from uphooks import metrics
from uphooks.keys import Keys
from uphooks.readback import ReadBack
from uphooks.reconcile import Reconciler, to_webhook
from uphooks.redis import sync_client
from uphooks.settings import get_settings
from uphooks_cli.drift import compare, our_view
from uphooks_cli.errors import api_errors
from uphooks_cli.eventlog import EventLog, fmt_time, parse_time
from uphooks_cli.output import echo_json, json_option
from uphooks_cli.watch import as_history_items, follow


def _api(budget: int | None = None) -> ReadBack:
    settings = get_settings()
    return ReadBack.from_settings(settings, budget=budget or settings.reconcile_request_budget)


def _reconciler() -> Reconciler:
    settings = get_settings()
    return Reconciler(sync_client(settings), settings, inject)


@click.command("reconcile")
@click.option(
    "--since",
    help="read back to: 15m, 2h, 7d, unix seconds or ISO 8601 "
    "[default: the last checkpoint minus UPHOOKS_RECONCILE_OVERLAP_SECONDS]",
)
@click.option("--dry-run", is_flag=True, help="list what would be injected; change nothing")
@json_option()
@api_errors
def reconcile_command(since: str | None, dry_run: bool, as_json: bool) -> None:
    """One reconciliation pass: inject the upload results Upload-Post's history knows and no
    webhook told us about, marked "reconciled" (results younger than
    UPHOOKS_RECONCILE_GRACE_SECONDS are left to their webhook). Exits 1 when the pass was cut
    short (request budget, API failure)."""
    start = None
    if since is not None:
        try:
            start = parse_time(since)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from exc
    with _api() as api:
        result = _reconciler().run(api, since=start, dry_run=dry_run)
    if as_json:
        echo_json(result.as_dict())
    else:
        click.echo(
            f"history from {fmt_time(result.since)} to {fmt_time(result.until)}: "
            f"{len(result.found)} results, {result.already} already delivered, "
            f"{len(result.missing)} missing; {result.too_recent} too recent; "
            f"{result.requests} requests"
        )
        verb = "would inject" if dry_run else "injected"
        for found in result.missing:
            click.echo(f"{verb}: {found.describe()}" + (f"  {found.key}" if found.key else ""))
        if not result.complete:
            click.echo(f"cut short: {result.stopped}", err=True)
    if not result.complete:
        sys.exit(1)


@click.command("watch")
@click.option("--request-id", help="the upload's request_id (async uploads)")
@click.option("--job-id", help="the upload's job_id (scheduled posts)")
@click.option("--timeout", default=3600.0, show_default=True, help="give up after (s)")
@click.option(
    "--inject",
    "inject_missing",
    is_flag=True,
    help="when finished, inject results no webhook told us about (marked reconciled)",
)
@api_errors
def watch_command(
    request_id: str | None, job_id: str | None, timeout: float, inject_missing: bool
) -> None:
    """Follow one upload until it is finished: each platform's result as it appears. Exits 1
    when it failed, is not found or did not finish in time."""
    if bool(request_id) == bool(job_id):
        raise click.UsageError("give --request-id or --job-id (one of them)")
    last = None
    with _api() as api:
        for progress in follow(api, request_id=request_id, job_id=job_id, timeout=timeout):
            for line in progress.lines():
                click.echo(line)
            last = progress
    if last is None:
        sys.exit(1)
    if inject_missing:
        payloads = [p for p in map(to_webhook, as_history_items(last)) if p is not None]
        for found in _reconciler().inject(payloads):
            state = "already delivered" if found.known else f"injected {found.key}"
            click.echo(f"{state}: {found.describe()}")
    if last.status != "completed":
        sys.exit(1)


@click.command("drift")
@click.option(
    "--inject",
    "inject_missing",
    is_flag=True,
    help="inject the account event that explains each difference (marked reconciled)",
)
@api_errors
def drift_command(inject_missing: bool) -> None:
    """Compare Upload-Post's profiles and social accounts with what account events told us.
    Exits 1 when they differ (and nothing was injected)."""
    settings = get_settings()
    with _api() as api:
        profiles = api.users()
    ours = our_view(EventLog(sync_client(settings), Keys(settings.key_prefix)))
    found = compare(profiles, ours)
    if not found:
        click.echo(f"no drift: {len(profiles)} profile(s) agree with the account events kept")
        return
    for drift in found:
        click.echo(drift.describe())
    if not inject_missing:
        sys.exit(1)
    results = inject(settings, [d.event() for d in found])
    for drift, result in zip(found, results, strict=True):
        metrics.reconciled(drift.event()["event"], int(result.kept))
        state = f"injected {result.key}" if result.kept else "already injected"
        click.echo(f"{state}: {drift.profile} {drift.platform}")
