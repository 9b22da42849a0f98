"""``uphooks worker``: a Celery worker on this pipeline's queue."""

from __future__ import annotations

import os
import sys

import click

from uphooks.logs import wants_json
from uphooks.settings import get_settings


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx: click.Context) -> None:
    """Run a Celery worker; extra options go to ``celery worker`` (e.g. -c 4, -P solo)."""
    from workers.app import celery_app  # builds the Celery app: only for this command

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
