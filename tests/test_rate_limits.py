"""Rate limits shared by all workers (workers/rate_limits.py, rate.lua): a handler limited to
5/s across two worker processes runs each of 40 deliveries exactly once, on its first attempt,
never faster than the limit (plus its burst of 5)."""

from __future__ import annotations

import time

import pytest

from handlers.rates import parse_rate, parse_rates
from tests.conftest import Stack, wait_for
from tests.test_ledger import LATE, QUIET, post, runs, state, upload_body
from uphooks.errors import ConfigurationError
from uphooks.keys import Keys

RATED = "tests.plugins.rated"


def test_a_limited_handler_waits_in_redis_and_keeps_its_rate_across_workers(
    stack: Stack,
) -> None:
    r = stack.client()
    ingress = stack.ingress()
    stack.worker(RATED, **QUIET)
    stack.worker(RATED, **QUIET)
    keys = [post(ingress, upload_body()) for _ in range(40)]
    wait_for(
        lambda: all(state(stack, k, "rated.five") == "done" for k in keys),
        timeout=60,
        what="all 40 done",
    )
    time.sleep(LATE)
    for key in keys:
        assert runs(stack, "rated.five", key) == [1], key  # once, and the wait was no attempt
    at = sorted(float(v) for v in r.lrange(f"{stack.prefix}:test:rated:at", 0, -1))
    assert len(at) == 40
    # In any one second: at most the rate plus the burst. 40 runs: at least (40 - 5) / 5 s.
    for i, start in enumerate(at):
        within = sum(1 for t in at[i:] if t < start + 1.0)
        assert within <= 5 + 5, (start, within)
    assert at[-1] - at[0] >= 6.5
    assert r.zcard(Keys(stack.prefix).due) == 0


def test_rates_parse_or_refuse() -> None:
    five = parse_rate("5/s")
    assert (five.count, five.per, five.burst, five.interval) == (5, 1, 5, 0.2)
    slow = parse_rate("1/2s burst 3")
    assert (slow.interval, slow.burst) == (2, 3)
    assert parse_rate("100/m").interval == pytest.approx(0.6)
    assert [str(parse_rate(t)) for t in ("30/s", "1/2s burst 3", "100/m")] == [
        "30/s",
        "1/2s burst 3",
        "100/m",
    ]
    assert parse_rates("h", "30/s") == {"h": parse_rate("30/s")}
    assert set(parse_rates("h", {"chat:1": "1/s", "bot:2": "30/s"})) == {"chat:1", "bot:2"}
    for bad in ("30", "0/s", "5/d", "5/s burst"):
        with pytest.raises(ConfigurationError):
            parse_rate(bad)
    with pytest.raises(ConfigurationError):
        parse_rates("h", {"a b": "1/s"})
