"""An account handler with ``ordered_by="account"``, for tests/test_ordering.py.

Each call appends the event's ``created_at`` to ``calls:<platform>:<account>``; a call that
starts while another of the same account runs is recorded in ``overlaps``. An account named in
the ``stuck`` set fails every attempt until it is taken out of the set.
"""

from __future__ import annotations

import time

from handlers import Context, Options, TransientError, on
from tests.plugins import store
from uphooks.events import AccountEvent

ACCOUNT_EVENTS = (
    "social_account_connected",
    "social_account_disconnected",
    "social_account_reauth_required",
)


@on(
    *ACCOUNT_EVENTS, name="ordered.account", options=Options(ordered_by="account", max_attempts=100)
)
def account(event: AccountEvent, ctx: Context) -> None:
    r = store.client()
    who = f"{event.platform}:{event.account_name}"
    if r.sismember(store.key("stuck"), who):
        r.incr(store.key(f"failures:{who}"))
        raise TransientError(f"{who} is stuck on purpose")
    if r.incr(store.key(f"running:{who}")) > 1:
        r.rpush(store.key("overlaps"), f"{who} {event.created_at.isoformat()}")
    time.sleep(0.02)
    r.rpush(store.key(f"calls:{who}"), event.created_at.isoformat())
    r.decr(store.key(f"running:{who}"))
