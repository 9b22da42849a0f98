"""Settings of the workers: which handlers they load, Celery's time limits and the visibility
timeout they must fit in, batching, async and threaded runs, retries, leases, the schedule and
recovery, ordering. Part of :class:`uphooks.settings.Settings`; docs/design.md says why."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from uphooks.settings_values import DAY, HOUR, comma_list


class WorkerSettings(BaseModel):
    # Handler modules to import, comma-separated (in addition to the built-in ``log`` handler).
    handler_modules: Annotated[list[str], NoDecode] = Field(default_factory=list)
    builtin_log_handler: bool = True
    # kombu redelivers a message that stayed unacknowledged this long. Every delay we ask Celery
    # for (countdowns) and every task's hard time limit must stay well below it.
    visibility_timeout_seconds: int = HOUR
    # How often each worker looks for messages whose worker died (unacked past the timeout).
    restore_sweep_seconds: int = 30
    task_soft_time_limit_seconds: int = 240
    task_time_limit_seconds: int = 300
    worker_concurrency: int | None = None
    # Consume-side batching (workers/intake.py): a worker running a route message also takes up
    # to this many deliveries' further route messages from its queue, while handlers are fast.
    # 1 turns it off.
    worker_batch_max: int = Field(default=32, ge=1, le=1000)
    # ``async def`` handlers (workers/aio.py): calls in flight at once per worker process, on its
    # event loop. A message whose async pairs find the process full waits for room (in its slot).
    async_concurrency: int = Field(default=100, ge=1)
    # Sync handlers (without a time_limit) on this many threads of the worker process instead of
    # in the Celery pool slot, as many admitted calls queued in front of them: their messages
    # are acknowledged when the runs start, as for async ones. 0: off, sync handlers run in the
    # slot that took their message.
    sync_threads: int = Field(default=0, ge=0)
    # A prefork pool child makes a full garbage collection at most this often, after a task
    # (workers/pool_gc.py): it empties CPython's free lists, which only a full collection does.
    # 0: only when CPython decides to.
    pool_full_collection_seconds: float = Field(default=30.0, ge=0)
    # A message whose worker died this many times is split up, then dead-lettered (poison).
    poison_max_deliveries: int = 3
    # Retries of a failing handler: exponential backoff with full jitter. A retry waits in Redis
    # (the ledger's schedule, workers/schedule.py), so a delay may be hours long.
    retry_max_attempts: int = 12
    retry_base_delay_seconds: float = 10.0
    retry_max_delay_seconds: float = 2 * HOUR
    # Dead letters are kept this long.
    dlq_retention_seconds: int = 30 * DAY
    # A running handler's lease (workers/leases.py): renewed every third of this while it runs,
    # so a handler may run as long as it needs; a dead worker's pairs are taken over after it.
    lease_seconds: float = Field(default=30.0, ge=1.0)
    # How often every worker moves due work (retries, hand-offs, recoveries) onto its queue.
    schedule_interval_seconds: float = Field(default=1.0, gt=0)
    # A delivery or pair whose message was published but not taken by a worker this long after
    # (lost between Redis and a worker, or waiting in a long queue) is published again; the
    # wait doubles each time for the same item (up to 16x). A copy is harmless (the ledger
    # fences it), so this trades recovery time against extra messages under a long backlog.
    recover_after_seconds: int = Field(default=10 * 60, ge=1)
    # Handlers with ``ordered_by=``: an event starts no sooner than this after it arrived, so an
    # event that happened earlier but arrives up to this much later still runs first
    # (docs/design.md section 9). Latency of ordered handlers against reordering they absorb.
    order_window_seconds: float = Field(default=2.0, ge=0)

    _split_modules = field_validator("handler_modules", mode="before")(comma_list)

    @model_validator(mode="after")
    def _timings_fit_the_visibility_timeout(self) -> WorkerSettings:
        vt = self.visibility_timeout_seconds
        if self.task_soft_time_limit_seconds >= self.task_time_limit_seconds:
            raise ValueError(
                "UPHOOKS_TASK_SOFT_TIME_LIMIT_SECONDS must be below "
                "UPHOOKS_TASK_TIME_LIMIT_SECONDS so a handler is told to stop before it is killed"
            )
        if self.task_time_limit_seconds >= vt:
            raise ValueError(
                "UPHOOKS_TASK_TIME_LIMIT_SECONDS must stay below "
                f"UPHOOKS_VISIBILITY_TIMEOUT_SECONDS ({vt}): otherwise kombu redelivers a "
                "running message to a second worker. Raise the visibility timeout or lower the "
                "time limit."
            )
        return self
