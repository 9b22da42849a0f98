"""Account drift: Upload-Post's profiles and social accounts against what account events said.

``GET /api/uploadposts/users`` lists each profile's ``social_accounts`` (platform -> details, or
an empty value for a platform not connected). The kept account events (``uphooks events``) give
our view: the last status per (profile, platform). A difference is reported; with ``--inject``
the account event that would explain it is injected like a reconciled upload result
(receiver/inject.py), once per fact (uphooks/facts.py ``account|...``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from uphooks.events import ACCOUNT_EVENTS
from uphooks_cli.eventlog import EventFilter, EventLog


@dataclass(frozen=True)
class Drift:
    profile: str
    platform: str
    provider: str  # "connected" | "not connected"
    ours: str  # last status an event told us, or "nothing"
    account_name: str

    def describe(self) -> str:
        return (
            f"{self.profile} {self.platform}: Upload-Post says {self.provider}, "
            f"the last account event said {self.ours}"
        )

    def event(self) -> dict[str, Any]:
        """The account event that brings our view in line with the provider's."""
        connected = self.provider == "connected"
        payload: dict[str, Any] = {
            "event": ACCOUNT_EVENTS[0] if connected else ACCOUNT_EVENTS[1],
            "user_email": "",
            "platform": self.platform,
            "account_name": self.account_name,
            "status": "connected" if connected else "disconnected",
            "profile_username": self.profile,
            "created_at": datetime.fromtimestamp(time.time(), UTC).isoformat(),
        }
        if not connected:
            payload["reason"] = "reconciled"
        return payload


def _name_of(details: object) -> str:
    if isinstance(details, dict):
        for field in ("username", "account_name", "handle", "display_name", "name", "id"):
            value = details.get(field)
            if isinstance(value, str | int) and str(value):
                return str(value)
    return details if isinstance(details, str) else ""


def our_view(log: EventLog) -> dict[tuple[str, str], tuple[str, str]]:
    """(profile, platform) -> (last status, account name), from the kept account events."""
    latest: dict[tuple[str, str], tuple[float, str, str]] = {}
    for event in ACCOUNT_EVENTS:
        for d in log.iter(EventFilter(event=event)):
            body = d.body if isinstance(d.body, dict) else {}
            pair = (str(body.get("profile_username") or ""), str(body.get("platform") or ""))
            row = (
                d.received_at,
                str(body.get("status") or ""),
                str(body.get("account_name") or ""),
            )
            if pair not in latest or latest[pair][0] < row[0]:
                latest[pair] = row
    return {pair: (status, name) for pair, (_, status, name) in latest.items()}


def compare(
    profiles: list[dict[str, Any]], ours: dict[tuple[str, str], tuple[str, str]]
) -> list[Drift]:
    found: list[Drift] = []
    provider: set[tuple[str, str]] = set()
    for profile in profiles:
        name = str(profile.get("username") or "")
        accounts = profile.get("social_accounts")
        accounts = accounts if isinstance(accounts, dict) else {}
        for platform, details in sorted(accounts.items()):
            if not details:
                continue
            provider.add((name, platform))
            status, _ = ours.get((name, platform), ("nothing", ""))
            if status != "connected":
                found.append(Drift(name, platform, "connected", status, _name_of(details)))
    known = {str(p.get("username") or "") for p in profiles}
    for (name, platform), (status, account) in sorted(ours.items()):
        if status == "connected" and name in known and (name, platform) not in provider:
            found.append(Drift(name, platform, "not connected", status, account))
    return found
