"""``uphooks``: the root command group. Each command group lives in a module of its own, named
for the command; this one only lists them and finds a running `uphooks dev` stack.

A command's module is imported when that command runs (or when ``--help`` lists them all), so
``uphooks status`` does not pay for uvicorn, Celery or the simulator.
"""

from __future__ import annotations

import importlib
import sys

import click

from uphooks_cli import devstate
from uphooks_cli.errors import FriendlyGroup

#: Command name -> "module:attribute" of its click command.
COMMANDS = {
    "serve": "uphooks_cli.serve:serve",
    "worker": "uphooks_cli.worker:worker",
    "dev": "uphooks_cli.dev:dev",
    "handlers": "uphooks_cli.handlers:list_handlers",
    "dlq": "uphooks_cli.dlq:dlq",
    "events": "uphooks_cli.events:events",
    "send": "uphooks_cli.send:send_command",
    "upload-post": "uphooks_cli.upload_post:upload_post",
    "status": "uphooks_cli.status:status_command",
    "reconcile": "uphooks_cli.reconcile:reconcile_command",
    "watch": "uphooks_cli.reconcile:watch_command",
    "drift": "uphooks_cli.reconcile:drift_command",
    "console": "console.cli:console",  # the operator console: its own package (docs/console.md)
}

# Commands that never look for a running `uphooks dev` stack: they start one, or serve.
_OWN_REDIS = ("dev", "serve")


class Commands(FriendlyGroup):
    """The root group: its commands are loaded from :data:`COMMANDS` on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=Commands)
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
