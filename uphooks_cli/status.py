"""``uphooks status``: is anybody processing? Workers seen, queue depths, dead letters, memory."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

import click

from uphooks.backlog import ledger_backlog
from uphooks.collector import queues_of
from uphooks.keys import Keys
from uphooks.liveness import workers_seen
from uphooks.redis import sync_client
from uphooks.settings import get_settings


def _builtin_queues() -> tuple[str | None, ...]:
    """The built-in plugins' own queues, from their own settings."""
    from handlers.forward import forward_settings
    from handlers.sql_settings import sql_settings
    from handlers.telegram import telegram_settings
    from handlers.upload_post_retry import upload_post_retry_settings

    return (
        telegram_settings().queue,
        forward_settings().queue,
        sql_settings().queue,
        upload_post_retry_settings().queue,
    )


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def status_command(as_json: bool) -> None:
    """Is anybody processing? Workers seen (heartbeats), queue depths, dead letters.

    Exits 1 when no worker is alive, or when workers on one queue load different handlers.
    """
    settings = get_settings()
    client = sync_client(settings)
    keys = Keys(settings.key_prefix)
    seen = workers_seen(client, keys, settings.heartbeat_stale_seconds)
    queues = {q: int(client.llen(q)) for q in queues_of(settings, _builtin_queues())}
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
