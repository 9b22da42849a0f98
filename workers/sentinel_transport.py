"""kombu's Sentinel transport with the fix of workers/transport.py (a lost connection does not
stop the worker), which matters most here: a failover drops every connection to the old master."""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

from workers.transport import QoS


class SentinelChannel(kombu_redis.SentinelChannel):
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
