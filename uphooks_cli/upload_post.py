"""``uphooks upload-post``: Upload-Post's notification settings shown, changed and tested."""

from __future__ import annotations

import sys

import click

from uphooks.provider_api import UploadPostAPI
from uphooks.settings import get_settings
from uphooks_cli import simulate
from uphooks_cli.errors import api_errors
from uphooks_cli.notifications import changes, describe, event_switches, problems, warnings
from uphooks_cli.output import echo_json, json_option


def _provider() -> UploadPostAPI:
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


@click.group("upload-post")
def upload_post() -> None:
    """Upload-Post's notification settings, through its API (UPHOOKS_UPLOAD_POST_API_KEY).

    The API key comes from the settings and is never printed. The base URL is
    UPHOOKS_UPLOAD_POST_API_URL.
    """


@upload_post.command("show")
@json_option("the API's settings object as JSON")
@api_errors
def upload_post_show(as_json: bool) -> None:
    """Show where and what Upload-Post sends (channels, webhook URL, events, Telegram chat).

    Reads with GET on the settings path: the provider's docs describe only the POST there.
    """
    with _provider() as api:
        current = api.read()
    if as_json:
        echo_json(current)
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
@json_option("the resulting settings as JSON")
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
        switches = event_switches(list(simulate.DOCUMENTED_EVENTS))
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
            echo_json(body)
            return
        result = api.update(body)
    if as_json:
        echo_json(result)
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
