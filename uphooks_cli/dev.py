"""``uphooks dev``: the Procfile's processes and an embedded Redis, for development."""

from __future__ import annotations

import click

from uphooks.settings import get_settings
from uphooks_cli import devserver


@click.command()
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
    devserver.run(get_settings(), host=host, port=port, redis_port=redis_port, data_dir=data_dir)
