"""Reconciliation against a real ingress, a real Redis and the fake Upload-Post API: each fact is
kept once whatever order webhooks and passes come in (a hypothesis property), the checkpoint,
the grace period, and a pass cut short by its budget."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from receiver.inject import inject
from tests.conftest import Ingress, Stack
from tests.fake_upload_post import KEY, FakeUploadPost, history_item
from uphooks.facts import NEAR_SECONDS
from uphooks.readback import ReadBack
from uphooks.reconcile import Reconciler, checkpoint_key
from uphooks.settings import Settings

PLATFORMS = ("tiktok", "instagram", "x", "youtube")
#: History times: results this far apart never share a "near" window (docs/reconciliation.md).
SLOT = 3 * NEAR_SECONDS


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@pytest.fixture
def api() -> Iterator[FakeUploadPost]:
    with FakeUploadPost() as fake:
        yield fake


@pytest.fixture
def ingress(stack: Stack) -> Ingress:
    return stack.ingress()


def settings_for(stack: Stack, api: FakeUploadPost, **extra: Any) -> Settings:
    return Settings(
        redis_url=stack.redis_url,
        key_prefix=stack.prefix,
        queue=stack.queue,
        upload_post_api_url=api.url,
        upload_post_api_key=KEY,
        **extra,
    )


def webhook_of(item: dict[str, Any], *, with_job_id: bool, skew: float) -> dict[str, Any]:
    """The webhook Upload-Post would have sent for a history item, with its naming."""
    ids = item["platform_post_id"]
    first = ids[0] if isinstance(ids, list) else ids
    at = datetime.fromisoformat(item["upload_timestamp"]).replace(tzinfo=UTC).timestamp()
    body: dict[str, Any] = {
        "event": "upload_completed",
        "user_email": item["user_email"],
        "profile_username": item["profile_username"],
        "platform": item["platform"],
        "media_type": item["media_type"],
        "title": item["post_title"],
        "caption": item["post_caption"],
        "result": {
            "success": item["success"],
            "url": item["post_url"],
            "publish_id": first,
            "post_id": first,
            "error": item["error_message"],
        },
        "created_at": iso(at + skew),
    }
    if with_job_id and item.get("request_id"):
        body["job_id"] = item["request_id"]
    return body


def kept(client: redis.Redis, prefix: str) -> list[dict[str, Any]]:
    records = []
    for name in client.scan_iter(f"{prefix}:delivery:*", count=1000):
        record = orjson.loads(client.get(name) or b"{}")
        records.append(record | {"payload": orjson.loads(record["body"])})
    return records


def wipe(client: redis.Redis, prefix: str, queue: str) -> None:
    names = list(client.scan_iter(f"{prefix}:*", count=1000))
    if names:
        client.delete(*names)
    client.delete(queue)


result_spec = st.fixed_dictionaries(
    {
        "platform": st.sampled_from(PLATFORMS),
        "profile": st.sampled_from(("alpha", "beta")),
        "success": st.booleans(),
        "has_request_id": st.booleans(),
        "ids": st.integers(min_value=0, max_value=2),  # a success's post ids: none, one, two
        "webhook_job_id": st.booleans(),  # the webhook carries the request id as job_id
        "delivery_header": st.booleans(),  # the sender sets X-Upload-Post-Delivery
        "skew": st.floats(min_value=-NEAR_SECONDS / 2, max_value=NEAR_SECONDS / 2),
        "copies": st.integers(min_value=0, max_value=2),  # webhooks sent (2: a resend)
    }
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    results=st.lists(result_spec, min_size=1, max_size=6),
    passes=st.integers(min_value=0, max_value=2),
    order=st.randoms(use_true_random=False),
)
def test_every_fact_is_kept_once_whatever_the_order_of_webhooks_and_passes(
    stack: Stack,
    ingress: Ingress,
    api: FakeUploadPost,
    results: list[dict[str, Any]],
    passes: int,
    order: Any,
) -> None:
    r = stack.client()
    wipe(r, stack.prefix, stack.queue)
    now = time.time()
    items, webhooks = [], []
    for i, spec in enumerate(results):
        ids = [f"{spec['platform']}-{uuid.uuid4().hex[:8]}" for _ in range(spec["ids"])]
        post_id: str | list[str] | None = ids if len(ids) > 1 else (ids[0] if ids else None)
        item = history_item(
            spec["platform"],
            success=spec["success"],
            at=iso(now - 86400 + i * SLOT),
            request_id=f"req-{uuid.uuid4().hex[:8]}" if spec["has_request_id"] else None,
            post_id=post_id,
            profile=spec["profile"],
            error="TikTok said no",
            title=f"r{i}",
        )
        items.append(item)
        body = orjson.dumps(webhook_of(item, with_job_id=spec["webhook_job_id"], skew=spec["skew"]))
        headers = {"X-Upload-Post-Delivery": uuid.uuid4().hex} if spec["delivery_header"] else {}
        webhooks += [("webhook", i, body, headers)] * spec["copies"]
    api.history = list(reversed(items))  # newest first
    steps: list[tuple[Any, ...]] = webhooks + [("pass",)] * passes
    order.shuffle(steps)

    conf = settings_for(stack, api, reconcile_grace_seconds=60)
    answers: dict[int, list[int]] = {i: [] for i in range(len(items))}
    for step in steps:
        if step[0] == "pass":
            with ReadBack.from_settings(conf) as rb:
                Reconciler(r, conf, inject).run(rb, since=now - 2 * 86400)
        else:
            _, i, body, headers = step
            answers[i].append(ingress.post(body, headers).status_code)

    per_result = Counter(rec["payload"]["title"] for rec in kept(r, stack.prefix))
    sources = {
        rec["payload"]["title"]: rec.get("source", "webhook") for rec in kept(r, stack.prefix)
    }
    for i, spec in enumerate(results):
        expected = 1 if spec["copies"] or passes else 0
        assert per_result[f"r{i}"] == expected, (i, spec, steps)
        first = next((s for s in steps if s[0] == "pass" or s[1] == i), None)
        if spec["copies"] and first is not None and first[0] == "webhook":
            # The webhook came first: it is the one kept; a pass never adds a copy of it.
            assert sources[f"r{i}"] == "webhook" and answers[i][0] == 202
        if first is not None and first[0] == "pass":
            # Reconciled first: every real webhook for it later is a 200 duplicate.
            assert sources[f"r{i}"] == "reconciled"
            assert set(answers[i]) <= {200}, answers[i]
        assert answers[i][1:] == [200] * (len(answers[i]) - 1)  # a resend is a duplicate


def test_a_pass_leaves_recent_results_to_their_webhook_and_reads_back_to_its_checkpoint(
    stack: Stack, api: FakeUploadPost
) -> None:
    r = stack.client()
    now = time.time()
    old = history_item("x", success=True, at=iso(now - 3 * 3600), post_id="old-1", title="old")
    recent = history_item("x", success=True, at=iso(now - 60), post_id="new-1", title="recent")
    api.history = [recent, old]
    conf = settings_for(stack, api, reconcile_grace_seconds=600, reconcile_overlap_seconds=600)
    with ReadBack.from_settings(conf) as rb:
        dry = Reconciler(r, conf, inject).run(rb, dry_run=True, now=now)
    assert [f.payload["title"] for f in dry.missing] == ["old"] and dry.too_recent == 1
    assert kept(r, stack.prefix) == [] and r.get(checkpoint_key(stack.prefix)) is None

    with ReadBack.from_settings(conf) as rb:
        first = Reconciler(r, conf, inject).run(rb, now=now)
    assert first.injected == 1 and first.checkpoint == now - 600
    [record] = kept(r, stack.prefix)
    assert record["source"] == "reconciled" and record["payload"]["result"]["post_id"] == "old-1"

    api.requests.clear()
    later = now + 3600
    with ReadBack.from_settings(conf) as rb:
        second = Reconciler(r, conf, inject).run(rb, now=later)
    # The recent one is past its grace now; the old one is before the checkpoint minus overlap.
    assert second.injected == 1 and second.looked_at == 2
    assert sorted(rec["payload"]["title"] for rec in kept(r, stack.prefix)) == ["old", "recent"]
    assert api.lines() == ["GET /api/uploadposts/history?limit=100&page=1"]


def test_a_pass_cut_short_by_its_budget_injects_what_it_read_and_keeps_the_old_checkpoint(
    stack: Stack, api: FakeUploadPost
) -> None:
    r = stack.client()
    now = time.time()
    api.history = [
        history_item("x", success=True, at=iso(now - 7200 - i), post_id=f"p{i}", title=f"t{i}")
        for i in range(150)
    ]
    conf = settings_for(stack, api, reconcile_grace_seconds=60)
    with ReadBack.from_settings(conf, budget=1) as rb:
        result = Reconciler(r, conf, inject).run(rb, now=now)
    assert not result.complete and "budget" in result.stopped
    assert result.injected == 100 and result.checkpoint is None
    assert r.get(checkpoint_key(stack.prefix)) is None
    with ReadBack.from_settings(conf) as rb:
        rest = Reconciler(r, conf, inject).run(rb, now=now)
    assert rest.complete and rest.injected == 50 and rest.already == 100
