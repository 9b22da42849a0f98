"""``with_redis_retries`` (workers/retrying.py): a failing call is retried until it succeeds, and
a call that succeeds at once leaves no reference cycle behind (docs/perf-notes/memory.md)."""

from __future__ import annotations

import gc

from workers.retrying import with_redis_retries


def test_a_call_that_fails_twice_is_retried_until_it_succeeds() -> None:
    calls: list[int] = []

    def flaky(value: int) -> int:
        calls.append(value)
        if len(calls) < 3:
            raise ConnectionError("Redis went away")
        return value * 2

    assert with_redis_retries(flaky)(21) == 42
    assert calls == [21, 21, 21]


def test_calls_that_succeed_leave_no_garbage_for_the_cyclic_collector() -> None:
    def admit(routes: list[str], holder: str) -> list[int]:
        return [1 for _ in routes]

    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            assert with_redis_retries(admit)(["a", "b"], "holder") == [1, 1]
        unreachable = gc.collect()
    finally:
        gc.enable()
    assert unreachable == 0
