"""What ``uphooks upload-post`` sends and says about Upload-Post's notification settings: the
POST body for a change (only what changes, ``channels`` whole) and the lines it prints.

The API client itself is ``uphooks/provider_api.py`` (workers and handlers use it too).
"""

from __future__ import annotations

from typing import Any

from uphooks_cli.simulate import DOCUMENTED_EVENTS


def event_switches(enabled: list[str]) -> dict[str, bool]:
    """``webhook_events`` with ``enabled`` on and every other documented event off."""
    switches = {name: name in enabled for name in DOCUMENTED_EVENTS}
    switches.update({name: True for name in enabled})
    return switches


def changes(
    *,
    url: str | None = None,
    webhook: bool | None = None,
    telegram: bool | None = None,
    telegram_chat_id: str | None = None,
    events: dict[str, bool] | None = None,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The POST body for a change: only what changes; ``channels`` whole (current + change)."""
    body: dict[str, Any] = {}
    if url is not None:
        body["webhook_url"] = url
        if webhook is None:
            webhook = True  # pointing Upload-Post here means wanting the webhook on
    if webhook is not None or telegram is not None:
        now = (current or {}).get("channels")
        channels = {k: bool(v) for k, v in now.items()} if isinstance(now, dict) else {}
        if webhook is not None:
            channels["webhook"] = webhook
        if telegram is not None:
            channels["telegram"] = telegram
        body["channels"] = channels
    if telegram_chat_id is not None:
        body["telegram_chat_id"] = telegram_chat_id
    if events is not None:
        body["webhook_events"] = events
    return body


def describe(settings: dict[str, Any]) -> list[str]:
    """Human lines for a settings object (what ``show`` prints)."""
    channels = settings.get("channels") if isinstance(settings.get("channels"), dict) else {}
    assert isinstance(channels, dict)

    def onoff(name: str) -> str:
        value = channels.get(name)
        return "?" if value is None else ("on" if value else "off")

    events = settings.get("webhook_events")
    if isinstance(events, dict) and events:
        listed = ", ".join(f"{name} {'on' if on else 'off'}" for name, on in events.items())
    else:
        listed = "all (none chosen: every event is sent)"
    lines = [
        f"webhook:  {onoff('webhook')}  {settings.get('webhook_url') or '(no URL)'}",
        f"events:   {listed}",
        f"telegram: {onoff('telegram')}  chat {settings.get('telegram_chat_id') or '-'}",
    ]
    if "webhook_secret_set" in settings:
        lines.append(f"secret:   {'set' if settings['webhook_secret_set'] else 'not set'}")
    return lines


def problems(settings: dict[str, Any], expected_url: str | None) -> list[str]:
    """What stops deliveries from reaching ``expected_url`` (None: any URL), in plain words."""
    found: list[str] = []
    channels = settings.get("channels")
    if isinstance(channels, dict) and channels.get("webhook") is False:
        found.append("the webhook channel is off: `uphooks upload-post set --webhook`")
    url = settings.get("webhook_url")
    if not url:
        found.append("no webhook URL is set: `uphooks upload-post set --url https://...`")
    elif expected_url and url != expected_url:
        found.append(f"the webhook URL is {url}, not this receiver's {expected_url}")
    events = settings.get("webhook_events")
    if isinstance(events, dict) and events and not any(events.values()):
        found.append("every webhook event is switched off: `uphooks upload-post set --all-events`")
    return found


def warnings(settings: dict[str, Any]) -> list[str]:
    """What works but should not stay so."""
    url = settings.get("webhook_url")
    if isinstance(url, str) and url.startswith("http://"):
        return [f"the webhook URL {url} is not HTTPS (the provider's docs ask for HTTPS)"]
    return []
