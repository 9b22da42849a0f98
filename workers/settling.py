"""Decide and settle: what each run came to, and recording it in the ledger in one call.

A failure is decided by the retry policy (workers/retrying.py: retry when, or dead); every
outcome of a batch of runs is then recorded by one settle call (settle.lua): done markers, the
next attempt scheduled in Redis, dead letters. Only the run holding a pair's token and lease
records its outcome.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

from handlers.registry import Router
from uphooks.taskmessage import PairRef
from workers import metrics
from workers.deadletter import DeadLetter
from workers.delivery import Delivery
from workers.leases import LeaseKeeper
from workers.ledger import Settlement
from workers.retrying import Dead, RetryPolicy, with_redis_retries
from workers.running import Job

log = logging.getLogger("uphooks.worker")

#: The tail of a traceback kept in a pair's outcome details (its attempt history).
TRACEBACK_KEPT = 8000


@dataclass
class Outcome:
    """What one claimed pair came to."""

    ref: PairRef
    kind: str  # done | retry | dead | release
    attempt: int
    delivery: Delivery | None = None
    error: str = ""
    traceback: str = ""
    due: float = 0.0
    trace: str = ""  # the first attempt's span, kept so later attempts link to it
    duration: float | None = None  # how long the handler ran (s), for the attempt history

    def settlement(self, now: float) -> Settlement:
        details: dict[str, Any] = {"attempt": self.attempt, "at": now, "outcome": self.kind}
        if self.duration is not None:
            details["duration"] = round(self.duration, 6)
        if self.error:
            details["error"] = self.error
        if self.traceback:
            details["traceback"] = self.traceback[-TRACEBACK_KEPT:]
        if self.trace:
            details["trace"] = self.trace
        extra: bytes | str | float = ""
        if self.kind == "retry":
            details["next_at"] = self.due
            extra = self.due
        elif self.kind == "dead":
            extra = orjson.dumps(asdict(self.dead_letter(now)))
        elif self.kind == "release" and self.due:
            extra = self.due  # over its rate limit: due when its slot comes
        return Settlement(self.ref, self.kind, orjson.dumps(details), extra)

    def dead_letter(self, now: float) -> DeadLetter:
        d = self.delivery
        return DeadLetter(
            key=self.ref[0],
            handler=self.ref[1],
            event=d.event_name if d else "?",
            attempts=self.attempt,
            error=self.error,
            traceback=self.traceback,
            first_received_at=(d.received_at or now) if d else now,
            dead_at=now,
            record=d.raw if d else "{}",
        )


def failed(policy: RetryPolicy, job: Job, exc: BaseException, took: float) -> Outcome:
    """A run that raised (after ``took`` seconds): retried when the policy says so, else dead."""
    decision = policy.decide(job.spec, job.attempt, exc)
    trace_text = "".join(traceback.format_exception(exc))
    if isinstance(decision, Dead):
        return Outcome(
            job.ref, "dead", job.attempt, job.delivery, repr(exc), trace_text, duration=took
        )
    log.warning(
        "attempt %d failed, retrying in %.0fs: %r",
        job.attempt,
        decision.due - time.time(),
        exc,
        extra={"delivery_key": job.ref[0], "handler": job.ref[1]},
    )
    return Outcome(
        job.ref,
        "retry",
        job.attempt,
        job.delivery,
        repr(exc),
        trace_text,
        due=decision.due,
        trace=job.first_trace,
        duration=took,
    )


class Settler:
    """Records outcomes; publishes at once what settling made due (an ordered key's next)."""

    def __init__(
        self,
        settle: Callable[[list[Settlement], str], list[str]],
        leases: LeaseKeeper,
        router: Router,
        move_due: Callable[[], object],
    ) -> None:
        self._settle = with_redis_retries(settle)
        self._leases = leases
        self._router = router
        self._move_due = with_redis_retries(move_due)

    def finish(self, outcomes: list[Outcome], holder: str) -> None:
        if not outcomes:
            return
        # No longer renewed from here on: a renewal racing this settle must not read as a loss.
        self._leases.release(holder, [(o.ref[0], o.ref[1]) for o in outcomes])
        now = time.time()
        results = self._settle([o.settlement(now) for o in outcomes], holder)
        counted: dict[str, list[str]] = {"done": [], "retry": [], "dead": []}
        for outcome, result in zip(outcomes, results, strict=True):
            key, name, _ = outcome.ref
            context = {"delivery_key": key, "handler": name}
            if result != "ok":
                log.warning(
                    "outcome %s not recorded: %s",
                    outcome.kind,
                    "another run holds the pair now (our lease ran out)"
                    if result == "lost"
                    else "the pair had moved on (settled, by this settle too when Redis applied "
                    "an earlier try whose answer was lost, or a newer token)",
                    extra=context,
                )
                continue
            if outcome.kind in counted:
                counted[outcome.kind].append(name)
            if outcome.kind == "dead":
                log.error(
                    "dead-lettered after %d attempt(s): %s",
                    outcome.attempt,
                    outcome.error,
                    extra=context,
                )
        metrics.handler_outcomes(
            done=counted["done"], retried=counted["retry"], dead=counted["dead"]
        )
        if any(self._ordered(name) for name in counted["done"] + counted["dead"]):
            # Settling promoted the next pair of its ordering key: publish it now, not at the
            # next scheduler pass (a key's events would otherwise go one per pass).
            self._move_due()

    def _ordered(self, name: str) -> bool:
        spec = self._router.get(name)
        return spec is not None and spec.ordered_by is not None
