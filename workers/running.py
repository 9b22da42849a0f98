"""The run step: one claimed pair's handler called, under its time limit, traced and timed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from handlers.context import Context, bound_logger
from handlers.registry import HandlerSpec
from uphooks import tracing
from uphooks.taskmessage import PairRef
from workers import metrics
from workers.delivery import Delivery
from workers.time_limits import time_limit

log = logging.getLogger("uphooks.worker")


@dataclass
class Job:
    """One claimed pair, ready to run."""

    ref: PairRef
    spec: HandlerSpec
    delivery: Delivery
    attempt: int
    parent: Any = None  # the trace context of its claim (uphooks/tracing.py), when tracing
    first_trace: str = ""  # the first attempt's span (traceparent), for a retry's link

    @property
    def pair(self) -> tuple[str, str]:
        return self.ref[0], self.ref[1]


def context_of(job: Job) -> Context:
    """What the handler is told about its run."""
    key, name, _ = job.ref
    record = job.delivery.record
    return Context(
        pair_key=f"{key}:{name}",
        delivery_key=key,
        handler_name=name,
        attempt=job.attempt,
        event_name=job.delivery.event_name,
        received_at=job.delivery.received_at,
        headers=record.get("headers") or {},
        log=bound_logger(key, name),
        body=record.get("body") or "",
        source=record.get("source") or "webhook",
    )


def attributes_of(job: Job) -> dict[str, str | int]:
    """The run's span attributes."""
    key, name, _ = job.ref
    return {"uphooks.delivery_key": key, "uphooks.handler": name, "uphooks.attempt": job.attempt}


def run_job(job: Job) -> None:
    """Call the handler; whatever it raises is the caller's to decide (workers/settling.py)."""
    key, name, _ = job.ref
    event = job.delivery.event()
    ctx = context_of(job)
    attributes = attributes_of(job)
    with (
        tracing.handler_span(job.parent, attributes, job.first_trace) as this_span,
        metrics.handler_call(name) as timer,
    ):
        job.first_trace = job.first_trace or this_span
        if job.spec.time_limit is None:
            job.spec.func(event, ctx)
        else:
            with time_limit(job.spec.time_limit, name):
                job.spec.func(event, ctx)
    log.info(
        "done in %.0f ms (attempt %d)",
        timer.seconds * 1000,
        job.attempt,
        extra={"delivery_key": key, "handler": name},
    )
