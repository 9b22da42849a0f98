"""``uphooks``: run the ingress and workers, inspect handlers, manage dead letters."""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import click

from uphooks.settings import get_settings

FIXTURE_HINT = "tests/fixtures/upload_completed.json"


@click.group()
def main() -> None:
    """Upload-Post webhook pipeline: Starlette ingress -> Redis -> Celery workers -> handlers."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", "processes", default=1, show_default=True, help="uvicorn processes")
def serve(host: str, port: int, processes: int) -> None:
    """Run the ingress (uvicorn)."""
    import uvicorn

    uvicorn.run(
        "receiver.app:app",
        factory=True,
        host=host,
        port=port,
        workers=processes,
        log_level=get_settings().log_level.lower(),
        timeout_graceful_shutdown=20,
    )


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker; extra options go to ``celery worker`` (e.g. -c 4, -P solo)."""
    from workers.app import celery_app

    settings = get_settings()
    argv = ["worker", "-Q", settings.queue, "--loglevel", settings.log_level, *ctx.args]
    celery_app.worker_main(argv)


@main.command()
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--data-dir", default="var/redis", show_default=True, type=click.Path())
def dev(port: int, data_dir: str) -> None:
    """Run the Procfile (ingress + worker), plus an embedded Redis when REDIS_URL is unset."""
    from honcho.environ import parse_procfile  # type: ignore[import-untyped]
    from honcho.manager import Manager  # type: ignore[import-untyped]

    from uphooks.embedded import RedisServer, find_redis_server, free_port

    settings = get_settings()
    # The Procfile says `uphooks ...`: make sure this interpreter's scripts are found first.
    scripts = str(Path(sys.executable).parent)
    env = dict(os.environ, PORT=str(port), PATH=os.pathsep.join([scripts, os.environ["PATH"]]))
    manager = Manager()
    if "redis_url" not in settings.model_fields_set:
        server = RedisServer(Path(data_dir).resolve(), port=free_port())
        server.data_dir.mkdir(parents=True, exist_ok=True)
        env["REDIS_URL"] = server.url
        manager.add_process("redis", shlex.join(server.command()), env=env)
        click.echo(f"embedded Redis ({find_redis_server()}) on {server.url}, data in {data_dir}")
    procfile = parse_procfile(Path("Procfile").read_text(encoding="utf-8"))
    for name, command in procfile.processes.items():
        manager.add_process(name, str(command), env=env)
    click.echo(
        "post a sample delivery with:\n"
        f"  curl -sS -X POST http://127.0.0.1:{port}{settings.webhook_path} "
        f"-H 'Content-Type: application/json' --data @{FIXTURE_HINT}"
    )
    manager.loop()
    sys.exit(manager.returncode)


@main.command("handlers")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def list_handlers(as_json: bool) -> None:
    """Show every handler the worker would load, its events, filters and retry limit."""
    from workers.plugins import load_handlers

    settings = get_settings()
    loaded = load_handlers(settings)
    rows: list[dict[str, Any]] = [
        {
            "name": spec.name,
            "source": loaded.sources.get(spec.name, "?"),
            "events": sorted(spec.events),
            "filters": {k: sorted(map(str, v)) for k, v in spec.filters.items()},
            "max_attempts": spec.max_attempts or settings.retry_max_attempts,
        }
        for spec in loaded.router
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['name']}  events={','.join(row['events'])}  filters={row['filters']}  "
            f"max_attempts={row['max_attempts']}  from {row['source']}"
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
    for key, value in data.items():
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


def _publish_first_attempt(keys: list[str], only: list[str]) -> None:
    from workers.tasks import publish

    publish(keys, only, 1, None, 0)


@dlq.command("replay")
@click.argument("entry_id", required=False)
@click.option("--all", "all_", is_flag=True, help="every dead letter matching the filters")
@with_filters
def dlq_replay(
    entry_id: str | None, all_: bool, event: str | None, handler: str | None, platform: str | None
) -> None:
    """Run the failed handler again for one dead letter, or all that match."""
    settings = get_settings()
    store = _dead_letters()
    chosen = _selected(entry_id, all_, _filter(event, handler, platform))
    replayed = 0
    with click.progressbar(chosen, label="replaying", show_pos=True, file=sys.stderr) as bar:
        for dl in bar:
            store.replay(dl, _publish_first_attempt, settings.dedup_ttl_seconds)
            replayed += 1
    click.echo(f"replayed {replayed} dead letter(s)")


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


if __name__ == "__main__":
    main()
