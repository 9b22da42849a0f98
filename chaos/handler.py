"""The counting handler the chaos workers load (``UPHOOKS_HANDLER_MODULES=chaos.handler``).

Its side effect is one row per idempotency key in an SQLite file (``chaos/effects.py``), outside
Redis, so the count does not depend on the system under test. Each event may carry a ``chaos``
object that tells the handler how to misbehave for it:

- ``{"mode": "hold"}``: wait, before the effect, until the harness releases or kills the process
  (or ``"s"`` seconds, 3 by default, have passed);
- ``{"mode": "fail", "k": 3}``: raise ``TransientError`` on the first ``k`` runs (with
  ``"retry_after": s``, not retried sooner);
- ``{"mode": "poison"}``: SIGKILL the process running it, every time;
- ``{"mode": "sleep", "s": 1.0}``: take that long.

Just before the effect it checks two promises of the pipeline from the inside, and notes a broken
one on the run: the done marker must not be set yet, and the lease must be held by this process.

The harness passes the store's folder in ``CHAOS_DIR`` (harness-only; the pipeline's own settings
all come from ``uphooks.settings``).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import redis

from chaos.effects import EffectStore
from chaos.holds import Holds
from handlers import Context, Router, TransientError
from uphooks.events import BaseEvent
from uphooks.keys import Keys
from uphooks.redis import sync_client
from uphooks.settings import get_settings

HANDLER = "chaos.count"
HOLD_DEADLINE_S = 3.0

router = Router()
_root = Path(os.environ.get("CHAOS_DIR", "var/chaos/adhoc"))
_store = EffectStore(_root / "effects.db")
_holds = Holds(_root)
_redis: tuple[int, redis.Redis] | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None or _redis[0] != os.getpid():
        _redis = (os.getpid(), sync_client(get_settings(), timeout=2.0))
    return _redis[1]


def broken_promise(ctx: Context) -> str | None:
    """What the pipeline promised and this run contradicts, if anything."""
    keys = Keys(get_settings().key_prefix)
    try:
        pipe = _client().pipeline(transaction=False)
        pipe.hget(keys.handled(ctx.delivery_key), ctx.handler_name)
        pipe.get(keys.lease(ctx.delivery_key, ctx.handler_name))
        marker, lease = pipe.execute()
    except redis.RedisError:
        return None  # cannot look; the run itself decides nothing
    if marker == b"done":
        return "ran although the done marker was set"
    holder = (lease or b"").decode()
    pid = holder.split("|")[1] if holder.count("|") >= 2 else ""
    if pid != str(os.getpid()):
        return f"ran without holding the lease (held by {holder or 'nobody'})"
    return None


@router.on("*", name=HANDLER)
def count(event: BaseEvent, ctx: Context) -> None:
    spec: dict[str, Any] = (event.model_extra or {}).get("chaos") or {}
    mode = spec.get("mode")
    run = _store.run_started(ctx.delivery_key, ctx.attempt)
    if mode == "fail" and _store.failures(ctx.delivery_key) < int(spec.get("k", 1)):
        _store.run_ended(run, "fail")
        after = spec.get("retry_after")
        raise TransientError(
            f"failing on purpose (attempt {ctx.attempt})",
            retry_after=None if after is None else float(after),
        )
    if mode == "poison":
        _store.run_ended(run, "poison")
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hold":
        _holds.wait(ctx.delivery_key, float(spec.get("s", HOLD_DEADLINE_S)))
    if mode == "sleep":
        time.sleep(float(spec.get("s", 1.0)))
    _store.apply(run, ctx.delivery_key, ctx.handler_name, ctx.attempt, broken_promise(ctx))
