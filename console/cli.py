"""``uphooks console`` (serve the console) and ``uphooks console hash-password``.

Registered on the main CLI with one line; everything else about the command lives here.
"""

from __future__ import annotations

import sys

import click


@click.group(invoke_without_command=True)
@click.option("--host", help="[default: UPHOOKS_CONSOLE_HOST, 127.0.0.1]")
@click.option("--port", type=int, help="[default: UPHOOKS_CONSOLE_PORT, 8002]")
@click.option(
    "--optional",
    is_flag=True,
    help="with no user or token set, say so and wait instead of failing (for a Procfile run "
    "as a whole, like `uphooks dev`, where one process ending stops the others)",
)
@click.pass_context
def console(ctx: click.Context, host: str | None, port: int | None, optional: bool) -> None:
    """Run the operator console (a web app on its own port): events, dead letters, replay.

    Off until UPHOOKS_CONSOLE_USERS or UPHOOKS_CONSOLE_TOKENS is set (docs/console.md).
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from console.app import create_app
    from uphooks import logs
    from uphooks.errors import ConfigurationError
    from uphooks.settings import get_settings

    settings = get_settings()
    try:
        app = create_app(settings)
    except ConfigurationError as exc:
        if not optional:
            raise click.ClickException(str(exc)) from exc
        _wait_for_a_stop_signal(f"console off: {exc}")
        return
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host or settings.console_host,
            port=port or settings.console_port,
            root_path=settings.console_root_path,
            log_config=logs.dict_config(settings, "console"),
            log_level=settings.log_level.lower(),
            # Client addresses come from UPHOOKS_TRUSTED_PROXIES only (console/state.py).
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    )
    server.run()
    if not server.started:
        sys.exit(3)


def _wait_for_a_stop_signal(why: str) -> None:
    """Say ``why`` once the stop signal is handled (whoever reads it may stop us at once)."""
    import contextlib
    import signal

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    click.echo(why, err=True)
    with contextlib.suppress(KeyboardInterrupt):
        signal.pause()


@console.command("hash-password")
@click.option("--name", default="", help="print a whole UPHOOKS_CONSOLE_USERS entry for this user")
@click.option(
    "--role", type=click.Choice(["operator", "read-only"]), default="operator", show_default=True
)
def hash_password(name: str, role: str) -> None:
    """Ask for a password twice and print its scrypt hash (the password is not kept)."""
    from console.credentials import hash_password as make

    password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    if len(password) < 12:
        raise click.ClickException("use 12 characters or more")
    stored = make(password)
    click.echo(f"{name}:{role}:{stored}" if name else stored)
