"""Worker backlogs, staged before a worker starts: bare Celery messages (one event each) and ours
(through the ingress's own Enqueuer, in batches as group commit makes them)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import sys
import time
import uuid

import orjson
import redis

from bench.bodies import make_body
from bench.common import PREFIX, base_env
from bench.probe import READY_KEY, RUNS_KEY
from harness.procs import ROOT
from harness.redis import compact
from uphooks.settings import Settings


def retarget(client: redis.Redis, staging: str, queue: str) -> None:
    """Make the staged messages look published to ``queue`` (their routing key names the staging
    list), so that the worker sees exactly what a direct publish would have given it."""
    ready = staging + "-ready"
    raws: list[bytes] = client.lrange(staging, 0, -1)  # type: ignore[assignment]
    pipe = client.pipeline(transaction=False)
    for raw in reversed(raws):
        message = orjson.loads(raw)
        info = message["properties"]["delivery_info"]
        for name in ("exchange", "routing_key"):
            if info.get(name) == staging:
                info[name] = queue
        pipe.lpush(ready, orjson.dumps(message))
    pipe.delete(staging)
    pipe.rename(ready, staging)
    pipe.execute()


def stage_bare(client: redis.Redis, url: str, staging: str, events: int) -> None:
    """The backlog for the bare task: one Celery message per event.

    Celery publishes one message (``apply_async``, in a subprocess with the bench app); the others
    are copies of it with their own ids and event, which is what ``apply_async`` would write but
    ~50x faster to make (publishing 20,000 one by one took a minute on a busy machine).
    """
    code = "import sys\nfrom bench.celery_noop import noop\nnoop.apply_async(args=[sys.argv[1]])\n"
    env = base_env(url, BENCH_QUEUE=staging)
    first = make_body("bare0000000000000000").decode()
    subprocess.run([sys.executable, "-c", code, first], env=env, cwd=ROOT, check=True)
    template = orjson.loads(client.rpop(staging))  # type: ignore[arg-type]
    args, kwargs, embed = orjson.loads(base64.b64decode(template["body"]))
    assert args == [first], args
    pipe = client.pipeline(transaction=False)
    for i in range(events):
        body = make_body(f"bare{i:016d}").decode()
        task_id = str(uuid.uuid4())
        template["body"] = base64.b64encode(orjson.dumps([[body], kwargs, embed])).decode()
        template["headers"].update(id=task_id, root_id=task_id, argsrepr=repr([body]))
        template["properties"].update(correlation_id=task_id, delivery_tag=str(uuid.uuid4()))
        pipe.lpush(staging, orjson.dumps(template))
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()


async def _stage_ours(
    url: str, staging: str, events: int, batch_max: int, concurrency: int
) -> None:
    from receiver.enqueue import Enqueuer
    from uphooks.redis import async_client

    settings = Settings(
        redis_url=url, key_prefix=PREFIX, queue=staging, enqueue_batch_max=batch_max
    )
    client = async_client(settings)
    enqueuer = Enqueuer(client, settings)
    await enqueuer.start()
    tag = uuid.uuid4().hex[:8]
    counter = iter(range(events))
    headers = {"content-type": "application/json", "user-agent": "Upload-Post-Webhooks/1.0"}

    async def submitter() -> None:
        for i in counter:
            body = make_body(f"{tag}{i:012d}")
            key = f"e:{hashlib.sha256(body).hexdigest()[:40]}"
            record = orjson.dumps(
                {
                    "key": key,
                    "event": "upload_completed",
                    "received_at": time.time(),
                    "headers": headers,
                    "body": body.decode(),
                }
            )
            assert await enqueuer.submit(key, record)

    await asyncio.gather(*(submitter() for _ in range(concurrency)))
    await enqueuer.stop()
    await client.aclose()


def stage_ours(url: str, staging: str, events: int, batch_max: int, concurrency: int) -> None:
    """Our backlog: ``events`` deliveries through the Enqueuer, ``batch_max`` per message."""
    asyncio.run(_stage_ours(url, staging, events, batch_max, concurrency))


def clear_worker_state(client: redis.Redis, keep: str) -> None:
    """Forget what the last drain wrote (markers, leases, counters, kombu's unacked set); the
    stored deliveries and the staged backlogs (``keep*``) stay. Then shrink the AOF."""
    patterns = [f"{PREFIX}:handled:*", f"{PREFIX}:lease:*", f"{PREFIX}:redelivered:*"]
    patterns += ["unacked*", "bench-*"]
    client.delete(READY_KEY, RUNS_KEY)
    for pattern in patterns:
        batch: list[bytes] = []
        for key in client.scan_iter(pattern, count=5000):
            if not key.decode().startswith(keep):
                batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)
    compact(client)
