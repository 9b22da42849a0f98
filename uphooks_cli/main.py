"""``uphooks``: the root command group. Each command group lives in a module of its own, named
for the command; this one only puts them together and finds a running `uphooks dev` stack."""

from __future__ import annotations

import sys

import click

from uphooks_cli import (
    dev,
    devstate,
    dlq,
    events,
    handlers,
    reconcile,
    send,
    serve,
    status,
    upload_post,
    worker,
)
from uphooks_cli.errors import FriendlyGroup

# Commands that never look for a running `uphooks dev` stack: they start one, or serve.
_OWN_REDIS = ("dev", "serve")


@click.group(cls=FriendlyGroup)
@click.pass_context
def main(ctx: click.Context) -> None:
    """Upload-Post webhook pipeline: Starlette ingress -> Redis -> Celery workers -> handlers.

    Run from the folder of a running `uphooks dev` (`make run`) without REDIS_URL, the commands
    use that stack's Redis (var/dev.json).
    """
    if ctx.invoked_subcommand not in _OWN_REDIS and "--help" not in sys.argv[1:]:
        found = devstate.adopt()
        if found is not None:
            click.echo(
                f"using the `uphooks dev` stack (pid {found.pid}, {devstate.STATE_FILE}): "
                f"Redis {devstate.redacted(found.redis_url)}",
                err=True,
            )


COMMANDS: tuple[click.Command, ...] = (
    serve.serve,
    worker.worker,
    dev.dev,
    handlers.list_handlers,
    dlq.dlq,
    events.events,
    send.send_command,
    upload_post.upload_post,
    status.status_command,
    *reconcile.COMMANDS,
)

for _command in COMMANDS:
    main.add_command(_command)
