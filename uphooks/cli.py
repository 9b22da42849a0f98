"""``uphooks``: run the ingress and workers, inspect handlers, manage dead letters."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click

from uphooks.cli_errors import FriendlyGroup, api_errors
from uphooks.cli_reconcile import register as register_reconcile
from uphooks.settings import get_settings

# Commands that never look for a running `uphooks dev` stack: they start one, or serve.
_OWN_REDIS = ("dev", "serve")


@click.group(cls=FriendlyGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Upload-Post webhook pipeline: Starlette ingress -> Redis -> Celery workers -> handlers.

    Run from the folder of a running `uphooks dev` (`make run`) without REDIS_URL, the commands
    use that stack's Redis (var/dev.json).
    """
    from uphooks import devstate

    if ctx.invoked_subcommand not in _OWN_REDIS and "--help" not in sys.argv[1:]:
        found = devstate.adopt()
        if found is not None:
            click.echo(
                f"using the `uphooks dev` stack (pid {found.pid}, {devstate.STATE_FILE}): "
                f"Redis {devstate.redacted(found.redis_url)}",
                err=True,
            )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "processes", default=1, show_default=True, help="uvicorn processes")
def serve(host: str, port: int, processes: int) -> None:
    """Run the ingress (uvicorn): webhooks on HOST:PORT; metrics, OpenAPI and /readyz on the
    admin listener (UPHOOKS_ADMIN_HOST:UPHOOKS_ADMIN_PORT, 127.0.0.1:8001 by default)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from receiver.connections import GuardedHttpToolsProtocol
    from uphooks import logs, metrics

    settings = get_settings()
    if settings.admin_port == port:
        raise click.ClickException(
            f"the admin listener and the webhook listener both want port {port}: set "
            "UPHOOKS_ADMIN_PORT to another port (or 0 for no admin listener)"
        )
    if processes > 1:  # uvicorn's processes then share one metrics folder
        metrics.prepare_multiprocess("ingress", settings)
    _raise_open_files_limit(settings.max_connections)
    config = uvicorn.Config(
        "receiver.app:app",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        # Deadlines and connection caps (receiver/connections.py), on uvicorn's own protocol.
        http=GuardedHttpToolsProtocol,
        timeout_keep_alive=settings.keepalive_timeout_seconds,
        log_level=settings.log_level.lower(),
        log_config=logs.dict_config(settings, "ingress"),
        timeout_graceful_shutdown=20,
        # Client addresses come from UPHOOKS_TRUSTED_PROXIES only (receiver/allowed_networks.py).
        proxy_headers=False,
        server_header=False,
    )
    # Both sockets are bound here and served by one uvicorn server per process (one event
    # loop); receiver.app.Listeners tells them apart by the port a request arrived on. With
    # --workers N every process serves both, as uvicorn shares any socket it is given.
    sockets = [config.bind_socket()]
    if settings.admin_port:
        sockets.append(_bind_admin(settings.admin_host, settings.admin_port))
    try:
        if processes > 1:
            Multiprocess(config, sockets=sockets).run()
            return
        server = uvicorn.Server(config)
        server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    if processes == 1 and not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE


def _bind_admin(host: str, port: int) -> Any:
    import logging
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise click.ClickException(
            f"the admin listener cannot use {host}:{port} ({exc.strerror}): set "
            "UPHOOKS_ADMIN_PORT to a free port (0: no admin listener), or UPHOOKS_ADMIN_HOST"
        ) from exc
    sock.set_inheritable(True)
    logging.getLogger("uphooks.receiver").info(
        "admin listener (metrics, OpenAPI, readiness) on http://%s:%d", host, port
    )
    return sock


def _raise_open_files_limit(connections: int) -> None:
    """Each connection is a file descriptor: make room for UPHOOKS_MAX_CONNECTIONS of them."""
    import resource

    wanted = connections + 256  # Redis, logs, metrics files, the listeners
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < wanted:
        click.echo(
            f"warning: only {target} open files allowed (ulimit -n); UPHOOKS_MAX_CONNECTIONS="
            f"{connections} needs about {wanted}: raise the limit or lower the setting",
            err=True,
        )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker; extra options go to ``celery worker`` (e.g. -c 4, -P solo)."""
    from uphooks.logs import wants_json
    from workers.app import celery_app

    settings = get_settings()
    argv = ["worker", "-Q", settings.queue, "--loglevel", settings.log_level]
    if not any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in ctx.args):
        # Celery's default, celery@<host>, is the same for every worker on a host: the
        # heartbeats (uphooks status) would count two as one.
        argv += ["-n", f"uphooks-{os.getpid()}@%h"]
    if wants_json(settings):
        # The banner is plain text; under JSON logs the same facts come as JSON lines.
        argv.insert(0, "--quiet")
    argv += ctx.args
    # Not worker_main(): it drops the exit code, so a worker that stopped on an unrecoverable
    # error would exit 0 and a supervisor with Restart=on-failure would leave it down.
    sys.exit(celery_app.start(argv) or 0)


@main.command()
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="the ingress's address; 0.0.0.0 lets other machines post (verification is off!)",
)
@click.option("--port", default=8000, show_default=True, type=int, help="the ingress's port")
@click.option(
    "--redis-port",
    default=0,
    type=int,
    help="the embedded Redis's port [default: a free one; the CLI finds it in var/dev.json]",
)
@click.option("--data-dir", default="var/redis", show_default=True, type=click.Path())
def dev(host: str, port: int, redis_port: int, data_dir: str) -> None:
    """Run the Procfile (ingress + worker), plus an embedded Redis when REDIS_URL is unset.

    Stops everything on Ctrl-C, SIGTERM or SIGHUP (a closed terminal); Redis last.
    """
    from uphooks import devserver

    devserver.run(get_settings(), host=host, port=port, redis_port=redis_port, data_dir=data_dir)


@main.command("handlers")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_handlers(as_json: bool) -> None:
    """Show every handler the worker would load: where it came from, the events and filters it
    takes, its queue and its retry policy (defaults from the UPHOOKS_* settings filled in)."""
    from uphooks.errors import ConfigurationError
    from workers.plugins import describe, load_handlers

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


# -- dead letters --------------------------------------------------------------------------


def _dead_letters() -> Any:
    from uphooks.keys import Keys
    from uphooks.redis import sync_client
    from workers.deadletter import DeadLetters

    settings = get_settings()
    return DeadLetters(
        sync_client(settings), Keys(settings.key_prefix), settings.dlq_retention_seconds
    )


def _filter(event: str | None, handler: str | None, platform: str | None) -> Any:
    from workers.deadletter import Filter

    return Filter(event=event, handler=handler, platform=platform)


_filters = [
    click.option("--event", help="only this event name"),
    click.option("--handler", help="only handlers matching this glob"),
    click.option("--platform", help="only deliveries for this platform"),
]


def with_filters(func: Any) -> Any:
    for option in reversed(_filters):
        func = option(func)
    return func


@main.group()
def dlq() -> None:
    """Dead letters: list, show, replay, purge."""


@dlq.command("ls")
@with_filters
@click.option("--json", "as_json", is_flag=True)
def dlq_ls(event: str | None, handler: str | None, platform: str | None, as_json: bool) -> None:
    """List dead letters, oldest first."""
    rows = [dl.summary() for dl in _dead_letters().iter(_filter(event, handler, platform))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no dead letters")
    for row in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["dead_at"]))
        click.echo(
            f"{row['id']}  {row['event']}  attempts={row['attempts']}  {when}Z  {row['error']}"
        )


@dlq.command("show")
@click.argument("entry_id")
@click.option("--json", "as_json", is_flag=True)
def dlq_show(entry_id: str, as_json: bool) -> None:
    """Show one dead letter: the delivery, the error and its traceback."""
    dl = _dead_letters().get(entry_id)
    if dl is None:
        raise click.ClickException(f"no dead letter {entry_id!r}; `uphooks dlq ls` lists them")
    data = dl.summary() | {"traceback": dl.traceback, "record": json.loads(dl.record)}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    from uphooks.eventlog import fmt_time

    for key, value in data.items():
        if key.endswith("_at") and isinstance(value, int | float):
            value = f"{fmt_time(value)} ({value:.0f})"
        if key not in ("traceback", "record"):
            click.echo(f"{key}: {value}")
    click.echo(f"delivery: {json.dumps(data['record'], indent=2)}")
    click.echo(f"traceback:\n{dl.traceback}")


def _selected(entry_id: str | None, all_: bool, flt: Any) -> list[Any]:
    store = _dead_letters()
    if entry_id:
        dl = store.get(entry_id)
        if dl is None:
            raise click.ClickException(f"no dead letter {entry_id!r}; `uphooks dlq ls` lists them")
        return [dl]
    if not all_ and flt == _filter(None, None, None):
        raise click.UsageError("name an entry id, give filters, or pass --all")
    return list(store.iter(flt))


def _ledger() -> Any:
    from uphooks.redis import sync_client
    from workers.ledger import Ledger

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


# -- operations: events, send, upload-post, status (docs/operations.md) --------------------


def _event_log() -> Any:
    from uphooks.eventlog import EventLog
    from uphooks.keys import Keys
    from uphooks.redis import sync_client

    settings = get_settings()
    return EventLog(sync_client(settings), Keys(settings.key_prefix))


def _time_option(value: str | None) -> float | None:
    from uphooks.eventlog import parse_time

    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


@main.group()
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
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
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
    from itertools import islice

    from uphooks.eventlog import EventFilter, fmt_time

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
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no deliveries match")
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
    from uphooks.eventlog import fmt_time

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
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def events_show(key: str, as_json: bool) -> None:
    """Show one delivery: headers, body and every handler's outcome."""
    from uphooks.eventlog import fmt_time

    delivery = _event_log().get(key)
    if delivery is None:
        raise click.ClickException(
            f"no delivery {key!r}: it never arrived or is older than UPHOOKS_DEDUP_TTL_SECONDS; "
            "`uphooks events ls` lists what is kept"
        )
    data = delivery.full()
    if as_json:
        click.echo(json.dumps(data, indent=2))
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


def _default_webhook_url(path: str) -> str:
    """The running `uphooks dev` stack's webhook URL, else the usual local one."""
    from uphooks import devstate

    found = devstate.read()
    return found.webhook_url if found is not None else f"http://127.0.0.1:8000{path}"


@main.command("send")
@click.argument("event", required=False)
@click.option(
    "--url",
    help="the receiver's webhook URL [default: the running `uphooks dev` stack's, else "
    "http://127.0.0.1:8000<UPHOOKS_WEBHOOK_PATH>]",
)
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    help="platform of the deliveries; repeat to rotate [default: the docs' example's]",
)
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--sign-with",
    "secret",
    help="signing secret [default: the first of UPHOOKS_SECRETS]; --unsigned sends none",
)
@click.option("--unsigned", is_flag=True, help="send no X-Upload-Post-Signature")
@click.option("--profile", default="your_profile_username", show_default=True)
@click.option("--email", default="owner@example.com", show_default=True)
@click.option("--failed", is_flag=True, help="upload_completed with result.success false")
@click.option("--no-job-id", is_flag=True, help="upload_completed as if not started by the API")
@click.option(
    "--body",
    "body_file",
    type=click.File("rb"),
    help="post this file's exact bytes instead (e.g. a saved delivery)",
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="post each delivery this many times, as the sender's retries do (same delivery id)",
)
@click.option(
    "--age",
    default=0.0,
    show_default=True,
    type=float,
    help="seconds to backdate X-Upload-Post-Timestamp (a late retry)",
)
@click.option("--concurrency", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--timeout", default=15.0, show_default=True, type=float, help="per request, s")
@click.option("--seed", type=int, help="make the generated bodies reproducible")
@click.option("--dry-run", is_flag=True, help="print the requests instead of sending them")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def send_command(
    event: str | None,
    url: str | None,
    platforms: tuple[str, ...],
    count: int,
    secret: str | None,
    unsigned: bool,
    profile: str,
    email: str,
    failed: bool,
    no_job_id: bool,
    body_file: Any,
    repeat: int,
    age: float,
    concurrency: int,
    timeout: float,
    seed: int | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Post realistic Upload-Post deliveries to a receiver, signed as the sender signs them.

    EVENT is upload_completed, social_account_connected, social_account_disconnected,
    social_account_reauth_required, or any newer name (sent with a minimal body). The local
    equivalent of a provider's "send test event"; with --count, a small load test that ends
    with a summary of status codes. Exits 1 unless every answer was 2xx.
    """
    from uphooks import simulate

    settings = get_settings()
    if body_file is None and not event:
        raise click.UsageError("name an EVENT (e.g. upload_completed) or pass --body FILE")
    if event and body_file is None and event not in simulate.DOCUMENTED_EVENTS:
        click.echo(f"note: {event!r} is not a documented event; sending a minimal body", err=True)
    if unsigned:
        secret = None
    elif secret is None and settings.secrets:
        secret = settings.secrets[0].get_secret_value()
    target = url or _default_webhook_url(settings.webhook_path)
    try:
        prepared = simulate.prepare(
            event,
            count,
            platforms=platforms,
            secret=secret,
            age_seconds=age,
            repeat=repeat,
            body=body_file.read() if body_file is not None else None,
            seed=seed,
            profile=profile,
            email=email,
            failed=failed,
            job_id=not no_job_id,
        )
    except ValueError as exc:
        raise click.UsageError(f"--body is not a JSON object with an event: {exc}") from exc
    if dry_run:
        for item in prepared:
            click.echo(f"POST {target}")
            for name, value in item.headers.items():
                click.echo(f"{name}: {value}")
            click.echo(f"\n{item.body.decode()}\n")
        return

    start = time.perf_counter()
    with click.progressbar(
        length=len(prepared), label=f"sending to {target}", show_pos=True, file=sys.stderr
    ) as bar:
        results = simulate.send(
            target,
            prepared,
            concurrency=concurrency,
            timeout=timeout,
            on_done=lambda _: bar.update(1),
        )
    summary = simulate.summarize(results, time.perf_counter() - start)
    summary["url"] = target
    summary["signed"] = secret is not None
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        codes = ", ".join(f"{code}: {n}" for code, n in summary["statuses"].items())
        errors = ", ".join(f"{name}: {n}" for name, n in summary["errors"].items())
        click.echo(f"sent {summary['sent']} ({'signed' if secret else 'unsigned'}) to {target}")
        click.echo(f"status codes: {codes or 'none'}" + (f"; errors: {errors}" if errors else ""))
        lat = summary["latency_ms"]
        click.echo(
            f"latency ms: p50 {lat['p50']}, p95 {lat['p95']}, max {lat['max']}; "
            f"{summary['per_second']}/s"
        )
        if len(results) == 1:
            click.echo(f"answer: {results[0].text or results[0].error}")
    if not summary["ok"]:
        sys.exit(1)


# -- Upload-Post's notification settings -------------------------------------------------------


def _provider() -> Any:
    from uphooks.provider_api import UploadPostAPI

    settings = get_settings()
    key = settings.upload_post_api_key
    return UploadPostAPI(
        settings.upload_post_api_url,
        key.get_secret_value() if key else "",
        timeout=settings.upload_post_timeout_seconds,
    )


def _this_receiver() -> str | None:
    settings = get_settings()
    if not settings.public_url:
        return None
    return settings.public_url + settings.webhook_path


@main.group("upload-post")
def upload_post() -> None:
    """Upload-Post's notification settings, through its API (UPHOOKS_UPLOAD_POST_API_KEY).

    The API key comes from the settings and is never printed. The base URL is
    UPHOOKS_UPLOAD_POST_API_URL.
    """


@upload_post.command("show")
@click.option("--json", "as_json", is_flag=True, help="the API's settings object as JSON")
@api_errors
def upload_post_show(as_json: bool) -> None:
    """Show where and what Upload-Post sends (channels, webhook URL, events, Telegram chat).

    Reads with GET on the settings path: the provider's docs describe only the POST there.
    """
    from uphooks.provider_api import describe, problems, warnings

    with _provider() as api:
        current = api.read()
    if as_json:
        click.echo(json.dumps(current, indent=2))
        return
    for line in describe(current):
        click.echo(line)
    for problem in problems(current, _this_receiver()) + warnings(current):
        click.echo(f"note: {problem}")


@upload_post.command("set")
@click.option(
    "--url",
    is_flag=False,
    flag_value="",
    default=None,
    help="webhook URL; without a value, this receiver's: UPHOOKS_PUBLIC_URL + "
    "UPHOOKS_WEBHOOK_PATH. Also turns the webhook channel on unless --no-webhook",
)
@click.option("--webhook/--no-webhook", default=None, help="the webhook channel on or off")
@click.option("--telegram/--no-telegram", default=None, help="the Telegram channel on or off")
@click.option("--telegram-chat-id", help="the Telegram chat Upload-Post writes to")
@click.option(
    "--events",
    help="comma-separated events to receive; the other documented ones are switched off",
)
@click.option("--all-events", is_flag=True, help="receive every event")
@click.option("--dry-run", is_flag=True, help="print the request body, change nothing")
@click.option("--json", "as_json", is_flag=True, help="the resulting settings as JSON")
@api_errors
def upload_post_set(
    url: str | None,
    webhook: bool | None,
    telegram: bool | None,
    telegram_chat_id: str | None,
    events: str | None,
    all_events: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Change Upload-Post's notification settings; only what is given changes.

    `uphooks upload-post set --url` points Upload-Post at this receiver. A channel change
    reads the current channels first (GET on the settings path, which the provider's docs do
    not show) and sends them whole, so the other channel keeps its state.
    """
    from uphooks.provider_api import changes, describe, event_switches, problems
    from uphooks.simulate import DOCUMENTED_EVENTS

    if url == "":
        url = _this_receiver()
        if url is None:
            raise click.UsageError(
                "--url without a value needs UPHOOKS_PUBLIC_URL (where Upload-Post reaches "
                "this receiver, e.g. https://hooks.example.com); or give the URL"
            )
    if url is not None and not url.startswith(("https://", "http://")):
        raise click.BadParameter(f"{url!r} is not an http(s) URL", param_hint="--url")
    if url is not None and url.startswith("http://"):
        click.echo("warning: the provider's docs ask for an HTTPS webhook URL", err=True)
    if events is not None and all_events:
        raise click.UsageError("give --events or --all-events, not both")
    switches = None
    if all_events:
        switches = event_switches(list(DOCUMENTED_EVENTS))
    elif events is not None:
        chosen = [e.strip() for e in events.split(",") if e.strip()]
        if not chosen:
            raise click.BadParameter("name at least one event", param_hint="--events")
        switches = event_switches(chosen)

    with _provider() as api:
        current = None
        if webhook is not None or telegram is not None or url is not None:
            # channels goes whole: read it first so a change to one never turns off the other.
            current = api.read()
        body = changes(
            url=url,
            webhook=webhook,
            telegram=telegram,
            telegram_chat_id=telegram_chat_id,
            events=switches,
            current=current,
        )
        if not body:
            raise click.UsageError("nothing to change: see `uphooks upload-post set --help`")
        if dry_run:
            click.echo(json.dumps(body, indent=2))
            return
        result = api.update(body)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo("Upload-Post now has:")
    for line in describe(result):
        click.echo(f"  {line}")
    for problem in problems(result, url or _this_receiver()):
        click.echo(f"note: {problem}")
    if result.get("webhook_secret_set") and not get_settings().secrets:
        click.echo(
            "note: Upload-Post signs deliveries with a secret (whsec_...) shown in its "
            "dashboard: put it in UPHOOKS_SECRETS, or the ingress cannot verify them"
        )


@upload_post.command("test")
@click.option(
    "--send",
    "send_sample",
    is_flag=True,
    help="also post a signed sample upload_completed to the configured webhook URL",
)
@click.option("--sign-with", "secret", help="[default: the first of UPHOOKS_SECRETS]")
@api_errors
def upload_post_test(send_sample: bool, secret: str | None) -> None:
    """Check that Upload-Post will deliver here: the key works, the webhook channel is on,
    the URL is this receiver's (UPHOOKS_PUBLIC_URL), events are switched on.

    Upload-Post's own test send (a sample upload_completed through the configured channels,
    offered by its dashboard and tooling) has no documented API endpoint, so it is not
    called; use the dashboard for it. --send posts a signed sample from here instead, the way
    the sender would, and reports the answer. Exits 1 when a check fails.
    """
    from uphooks import simulate
    from uphooks.provider_api import describe, problems, warnings

    with _provider() as api:
        current = api.read()
    click.echo("API key: accepted")
    for line in describe(current):
        click.echo(line)
    found = problems(current, _this_receiver())
    for problem in found:
        click.echo(f"problem: {problem}")
    for warning in warnings(current):
        click.echo(f"warning: {warning}")
    click.echo(
        "Upload-Post's own test send has no documented endpoint: use its dashboard, or --send"
    )
    if send_sample:
        target = current.get("webhook_url")
        if not target:
            raise click.ClickException("no webhook URL to send a sample to")
        settings = get_settings()
        if secret is None and settings.secrets:
            secret = settings.secrets[0].get_secret_value()
        prepared = simulate.prepare("upload_completed", 1, secret=secret)
        result = simulate.send(str(target), prepared, concurrency=1)[0]
        answer = result.status if result.status is not None else result.error
        click.echo(f"sample delivery to {target}: {answer} {result.text[:300]}")
        if not result.ok:
            found.append("the sample delivery was not accepted")
    if found:
        sys.exit(1)
    click.echo("ok")


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status_command(as_json: bool) -> None:
    """Is anybody processing? Workers seen (heartbeats), queue depths, dead letters.

    Exits 1 when no worker is alive, or when workers on one queue load different handlers.
    """
    from dataclasses import asdict

    from uphooks.backlog import ledger_backlog
    from uphooks.keys import Keys
    from uphooks.liveness import workers_seen
    from uphooks.metrics import queues_of
    from uphooks.redis import sync_client

    settings = get_settings()
    client = sync_client(settings)
    keys = Keys(settings.key_prefix)
    seen = workers_seen(client, keys, settings.heartbeat_stale_seconds)
    from handlers.forward import forward_settings
    from handlers.sql_settings import sql_settings
    from handlers.telegram import telegram_settings
    from handlers.upload_post_retry import upload_post_retry_settings

    # The built-in plugins' own queues, from their own settings.
    own = (
        telegram_settings().queue,
        forward_settings().queue,
        sql_settings().queue,
        upload_post_retry_settings().queue,
    )
    queues = {q: int(client.llen(q)) for q in queues_of(settings, own)}
    data: dict[str, Any] = {
        "workers": seen.as_dict(with_nodes=True),
        "queues": queues,
        "dead_letters": int(client.zcard(keys.dlq_index)),
        "deliveries_kept": int(client.zcard(keys.events_index)),
        "ledger": asdict(ledger_backlog(client, keys)),
    }
    memory: dict[str, Any] = client.info("memory")
    used, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
    data["redis_memory"] = {
        "used_bytes": used,
        "maxmemory_bytes": limit,
        "ingress_limit_ratio": settings.redis_memory_limit_ratio,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(
            f"workers alive: {seen.alive}"
            + (
                f" (last heartbeat {seen.last_seen_seconds_ago:.0f}s ago)"
                if seen.last_seen_seconds_ago is not None
                else " (no heartbeat ever seen)"
            )
        )
        info = dict(seen.info)
        for node, ago in seen.nodes:
            what = ""
            if node in info:
                names = sorted(info[node].handlers)
                what = f", queues {', '.join(info[node].queues)}, handlers: {', '.join(names)}"
            click.echo(f"    {node}: {ago:.0f}s ago{what}")
        for mismatch in seen.mismatches:
            click.echo(f"WARNING: {mismatch.describe()}")
        for queue, depth in queues.items():
            click.echo(f"queue {queue}: {depth} waiting")
        click.echo(f"dead letters: {data['dead_letters']}")
        click.echo(f"deliveries kept: {data['deliveries_kept']}")
        backlog = data["ledger"]
        click.echo(
            f"ledger: {backlog['open_items']} open, oldest overdue "
            f"{backlog['oldest_overdue_seconds']:.0f}s"
        )
        ratio = settings.redis_memory_limit_ratio
        click.echo(
            f"redis memory: {used / 2**20:.1f} MiB of maxmemory {limit / 2**20:.0f} MiB "
            f"({used / limit:.0%}; the ingress answers 503 above {ratio:.0%})"
            if limit
            else f"redis memory: {used / 2**20:.1f} MiB, no maxmemory (no limit, no 503)"
        )
    if seen.alive == 0 or seen.mismatches:
        sys.exit(1)


register_reconcile(main)  # reconcile, watch, drift (uphooks/cli_reconcile.py)

if __name__ == "__main__":
    main()
