"""The filters of the Events and Dead letters pages, from a query string or a form, and back.

One reading for both, so the list a bulk replay estimates is exactly the list on the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from console.store import STATES, EventQuery
from uphooks_cli.eventlog import parse_time

FIELDS = ("state", "event", "platform", "profile", "handler", "since", "until")
MAX_LIMIT = 200


@dataclass(frozen=True)
class Filters:
    """What the user typed (shown back in the form) and the query it means."""

    given: dict[str, str]
    query: EventQuery
    problem: str | None = None

    def qs(self, **override: str) -> str:
        """The query string of these filters (for links: next page, estimate, live rows)."""
        values = {k: v for k, v in (self.given | override).items() if v}
        return urlencode(values)

    def with_state(self, state: str) -> Filters:
        return replace(self, query=replace(self.query, state=state))


def read(values: Mapping[str, object], *, default_limit: int = 50) -> Filters:
    given = {k: str(values.get(k) or "").strip()[:200] for k in (*FIELDS, "cursor", "limit")}
    problem = None
    state = given["state"] or None
    if state is not None and state not in STATES:
        problem, state = f"unknown state {state!r}: one of {', '.join(STATES)}", None
    times: dict[str, float | None] = {}
    for name in ("since", "until"):
        times[name] = None
        if given[name]:
            try:
                times[name] = parse_time(given[name])
            except ValueError as exc:
                problem = str(exc)
    try:
        limit = min(MAX_LIMIT, max(1, int(given["limit"] or default_limit)))
    except ValueError:
        limit = default_limit
    query = EventQuery(
        state=state,
        event=given["event"] or None,
        platform=given["platform"] or None,
        profile=given["profile"] or None,
        handler=given["handler"] or None,
        since=times["since"],
        until=times["until"],
        cursor=given["cursor"] or None,
        limit=limit,
    )
    return Filters({k: given[k] for k in FIELDS}, query, problem)
