"""``uphooks send``: realistic deliveries posted to a receiver, signed as the sender signs them."""

from __future__ import annotations

import sys
import time
from typing import BinaryIO

import click

from uphooks.settings import get_settings
from uphooks_cli import devstate, simulate
from uphooks_cli.output import echo_json, json_option


def _default_webhook_url(path: str) -> str:
    """The running `uphooks dev` stack's webhook URL, else the usual local one."""
    found = devstate.read()
    return found.webhook_url if found is not None else f"http://127.0.0.1:8000{path}"


@click.command("send")
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
@json_option("print the summary as JSON")
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
    body_file: BinaryIO | None,
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
        echo_json(summary)
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
