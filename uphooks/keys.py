"""Names of every Redis key the pipeline writes: the contract between ingress and workers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str

    def delivery(self, key: str) -> str:
        """The stored delivery (raw body, headers, receipt time); its existence de-duplicates."""
        return f"{self.prefix}:delivery:{key}"

    def handled(self, key: str) -> str:
        """Hash of handler name -> outcome for one delivery; ``done`` is the idempotency marker."""
        return f"{self.prefix}:handled:{key}"

    def lease(self, key: str, handler: str) -> str:
        return f"{self.prefix}:lease:{key}:{handler}"

    def deliveries_of(self, task_id: str) -> str:
        """How many times the broker handed one message to a worker (poison detection)."""
        return f"{self.prefix}:redelivered:{task_id}"

    @property
    def dlq_index(self) -> str:
        return f"{self.prefix}:dlq"

    def dlq_entry(self, entry_id: str) -> str:
        return f"{self.prefix}:dlq:{entry_id}"

    @property
    def events_index(self) -> str:
        """Sorted set of delivery keys by receipt time, for listing what arrived."""
        return f"{self.prefix}:events"

    @property
    def due(self) -> str:
        """The ledger's schedule: sorted set of work items by when something must happen next.

        Members are pair ids ``<key>|<handler>`` (a retry, a hand-off, a running pair whose
        lease must be looked at) or ``<key>|`` (a delivery not yet routed by any worker); see
        workers/ledger.py."""
        return f"{self.prefix}:due"

    @property
    def scheduler_passed(self) -> str:
        """Redis's time of the scheduler's last pass (workers/grace.lua)."""
        return f"{self.prefix}:passed"

    @property
    def stall_grace(self) -> str:
        """Set for one lease after a stall: lapsed leases are not taken meanwhile (grace.lua)."""
        return f"{self.prefix}:grace"

    def order(self, handler: str, ordering_key: str) -> str:
        """One handler's pairs with one ordering key, waiting their turn (workers/order.lua)."""
        return f"{self.prefix}:order:{handler}:{ordering_key}"

    def rate_bucket(self, bucket: str) -> str:
        """A rate limit's bucket: its theoretical arrival time, ms (workers/rate.lua)."""
        return f"{self.prefix}:rate:bucket:{bucket}"

    def rate_slot(self, key: str, handler: str) -> str:
        """When a pair turned away by its rate limit may run, ms (workers/rate.lua)."""
        return f"{self.prefix}:rate:slot:{key}|{handler}"

    @property
    def worker_heartbeat(self) -> str:
        return f"{self.prefix}:worker-heartbeat"

    # -- console indexes (docs/design.md section 11) ------------------------------------------
    # Sorted sets of delivery keys scored by receipt time, like ``events``; written where the
    # data is born (receiver/enqueue.lua, workers/index.lua) and pruned with the retention.

    @property
    def index_prefix(self) -> str:
        """What every console index name starts with (the Lua scripts build the names)."""
        return f"{self.prefix}:ix:"

    def index(self, kind: str, value: str) -> str:
        """Deliveries with one attribute: kind ``ev`` (event name), ``pf`` (platform), ``pr``
        (profile), ``st`` (aggregate state), or ``hs`` (value ``<handler>|<pair state>``)."""
        return f"{self.prefix}:ix:{kind}:{value}"

    def index_state(self, state: str) -> str:
        return self.index("st", state)

    def index_pair(self, handler: str, state: str) -> str:
        return self.index("hs", f"{handler}|{state}")

    def lookup_bucket(self, n: int) -> str:
        """The job and post ids named by deliveries received in one time bucket (uphooks/
        indexes.py ``lookup_bucket_seconds``): members ``j:<job id>|<key>``, ``p:<post id>|<key>``,
        all scored 0 (a lookup is a lex range); expires one retention after the bucket's end."""
        return f"{self.prefix}:ix:find:{n}"

    @property
    def index_registry(self) -> str:
        """Every console index (not the lookups), scored by its oldest entry's receipt time:
        what the pruner (workers/index_prune.py) has to look at."""
        return f"{self.prefix}:ix"

    def attempts(self, key: str, handler: str) -> str:
        """One pair's attempt history (JSON details, oldest first, capped), when it had more
        than one attempt or failed; expires with the ledger hash."""
        return f"{self.prefix}:attempts:{key}|{handler}"
