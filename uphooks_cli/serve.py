"""``uphooks serve``: the ingress under uvicorn, with its admin listener beside it."""

from __future__ import annotations

import logging
import resource
import socket
import sys

import click

from uphooks.settings import get_settings


@click.command()
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


def _bind_admin(host: str, port: int) -> socket.socket:
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
