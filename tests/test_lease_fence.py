"""A worker that cannot reach Redis fences itself before its leases run out (workers/leases.py).

Real Redis, the real Ledger and LeaseKeeper; the fence is a callback here instead of SIGKILL so
the test can time it (chaos 17b runs the real one: a host's link cut mid-handler).
"""

from __future__ import annotations

import threading
import time

from uphooks.keys import Keys
from uphooks.redis import sync_client
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer
from workers.leases import LeaseKeeper
from workers.ledger import Ledger

LEASE = 1.5
PAIR = ("e:fence", "h.one")


def keeper_on(server: RedisServer) -> tuple[LeaseKeeper, list[float], threading.Event]:
    settings = Settings(redis_url=server.url, key_prefix="fence", lease_seconds=LEASE)
    client = sync_client(settings, timeout=0.3)
    client.set(Keys("fence").lease(*PAIR), "me", px=int(LEASE * 1000))
    fenced_at: list[float] = []
    fenced = threading.Event()

    def fence() -> None:
        fenced_at.append(time.monotonic())
        fenced.set()

    return LeaseKeeper(Ledger(client, settings), LEASE, fence=fence), fenced_at, fenced


def test_a_process_whose_renewals_cannot_reach_redis_fences_itself_before_the_lease_ends(
    own_redis: RedisServer,
) -> None:
    keeper, fenced_at, fenced = keeper_on(own_redis)
    keeper.hold("me", [PAIR])
    held_at = time.monotonic()
    own_redis.kill()
    assert fenced.wait(5), "no fence although no renewal reached Redis"
    took = fenced_at[0] - held_at
    # Two thirds of the lease (1.0 s) after the claim: before the lease (1.5 s) can run out.
    assert LEASE * 2 / 3 - 0.05 <= took < LEASE, took


def test_a_process_whose_renewals_reach_redis_is_never_fenced(own_redis: RedisServer) -> None:
    keeper, _, fenced = keeper_on(own_redis)
    keeper.hold("me", [PAIR])
    assert not fenced.wait(LEASE * 3), "fenced although every renewal was answered"
    with sync_client(Settings(redis_url=own_redis.url)) as r:
        assert r.get(Keys("fence").lease(*PAIR)) == b"me"  # renewed all along
    keeper.release("me")
