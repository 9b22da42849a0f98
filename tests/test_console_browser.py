"""The console in a real browser (Debian's Chromium, driven by Playwright) against a real stack:
Redis, the ingress, a worker with the ledgered test handlers, and the console process.

One stack and one browser for the module; each test signs in in a fresh browser context. With
UPHOOKS_SCREENSHOTS=docs/img the tests write the screenshots docs/console.md shows.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from tests.conftest import FIXTURES, Ingress, Stack, wait_for
from tests.console_stack import (
    CHROMIUM_ARGS,
    PASSWORDS,
    Console,
    chromium,
    screenshots_dir,
    start_console,
)
from uphooks_cli.embedded import free_port

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

LEDGERED = "tests.plugins.ledgered"
BROKEN = "ledger.broken"


@dataclass
class World:
    stack: Stack
    ingress: Ingress
    console: Console
    browser: Any

    @property
    def r(self) -> redis.Redis:
        return self.stack.client()

    def ctl(self, name: str) -> str:
        return f"{self.stack.prefix}:test:ctl:{name}"

    def runs(self, handler: str, key: str) -> list[int]:
        raw = self.r.lrange(f"{self.stack.prefix}:test:runs:{handler}:{key}", 0, -1)
        return [int(x) for x in raw]  # type: ignore[union-attr]

    def state(self, key: str, handler: str) -> str | None:
        value = self.r.hget(f"{self.stack.prefix}:handled:{key}", handler)
        return value.decode() if isinstance(value, bytes) else None

    def post(self, **fields: Any) -> str:
        """Post an upload_completed delivery (fields change the fixture); its delivery key."""
        body = json.loads((FIXTURES / "upload_completed.json").read_text())
        body["job_id"] = f"job-{uuid.uuid4().hex[:12]}"
        body.update(fields)
        answer = self.ingress.post(json.dumps(body))
        assert answer.status_code == 202, answer.text
        key: str = answer.json()["idempotency_key"]
        return key

    def signed_in(self, name: str = "ops") -> Any:
        context = self.browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.goto(self.console.url + "/login")
        page.fill("input[name=name]", name)
        page.fill("input[name=password]", PASSWORDS[name])
        page.click("form:has(input[name=password]) button")
        page.wait_for_url("**/events")
        return page

    def shot(self, page: Any, name: str) -> None:
        where = screenshots_dir()
        if where is not None:
            page.screenshot(path=str(where / f"console-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def world(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    executable = chromium()
    stack = Stack(redis_url, tmp_path_factory.mktemp("console"))
    try:
        worker_metrics = free_port()
        ingress = stack.ingress()
        stack.worker(LEDGERED, "-c", "2", UPHOOKS_WORKER_METRICS_PORT=str(worker_metrics))
        console = start_console(
            stack,
            UPHOOKS_HANDLER_MODULES=LEDGERED,
            UPHOOKS_CONSOLE_METRICS_URLS=(
                f"{ingress.admin_url}/metrics,http://127.0.0.1:{worker_metrics}/metrics"
            ),
            UPHOOKS_CONSOLE_BULK_CHUNK="2",
            UPHOOKS_CONSOLE_BULK_PAUSE_SECONDS="0.4",
        )
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=executable,
                args=CHROMIUM_ARGS,  # launch() gives each run a fresh profile folder
            )
            try:
                yield World(stack, ingress, console, browser)
            finally:
                browser.close()
    finally:
        stack.stop_all()
        client = stack.client()
        keys = list(client.scan_iter(f"{stack.prefix}*", count=1000))
        if keys:
            client.delete(*keys)


def test_a_delivery_sent_to_the_ingress_appears_in_the_list_without_a_reload(world: World) -> None:
    page = world.signed_in()
    page.evaluate("window.sameDocument = true")
    key = world.post(platform="tiktok")
    row = page.locator(f'#events tr[data-key="{key}"]')
    row.wait_for(timeout=10_000)
    assert page.evaluate("window.sameDocument") is True  # no navigation happened
    # ...and its state follows along: ledger.broken dead-letters it.
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    page.locator(f'#events tr[data-key="{key}"] .badge.dead').first.wait_for(timeout=10_000)


def test_filters_narrow_the_list(world: World) -> None:
    profile = f"p{uuid.uuid4().hex[:6]}"
    on_x = world.post(platform="x", profile_username=profile)
    on_tiktok = world.post(platform="tiktok", profile_username=profile)
    page = world.signed_in()
    page.wait_for_selector(f'#events tr[data-key="{on_x}"]', state="attached")
    page.fill("form.filters input[name=profile]", profile)
    page.fill("form.filters input[name=platform]", "x")
    page.click("form.filters button")
    page.wait_for_url("**platform=x**")
    keys = page.eval_on_selector_all("#events tbody tr", "rows => rows.map(r => r.dataset.key)")
    assert keys == [on_x]
    assert on_tiktok not in page.content()


def test_markup_in_a_delivery_is_shown_as_text_never_run(world: World) -> None:
    page = world.signed_in()
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: {dialog.message}"))
    key = world.post(profile_username='<b id="xss">x</b><img src=x onerror=alert(1)>')
    page.locator(f'#events tr[data-key="{key}"]').wait_for()  # through the live rows too
    page.goto(f"{world.console.url}/events/{key}")
    assert "<img src=x onerror=alert(1)>" in page.locator("#body").inner_text()
    assert page.locator("#xss").count() == 0
    page.goto(f"{world.console.url}/events")
    assert page.locator("#xss").count() == 0


def test_a_failing_handlers_traceback_is_visible_and_e_mail_addresses_are_masked(
    world: World,
) -> None:
    key = world.post(user_email="owner@example.com")
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    page = world.signed_in()
    page.goto(f"{world.console.url}/events/{key}")
    traceback = page.locator(f'article.handler[data-handler="{BROKEN}"] pre.traceback')
    assert "PermanentError" in traceback.inner_text()
    assert "broken on purpose" in traceback.inner_text()
    # UPHOOKS_LOG_PERSONAL_DATA is off: the address is masked in the body and the copy lines.
    assert '"user_email": "o***@example.com"' in page.locator("#body").inner_text()
    assert "owner@example.com" not in page.content()
    world.shot(page, "event")


def test_erasing_a_payload_keeps_the_outcomes(world: World) -> None:
    key = world.post(user_email="someone@example.com")
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    page = world.signed_in()
    page.goto(f"{world.console.url}/events/{key}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#erase")
    page.wait_for_selector("#erased")
    assert page.locator("#body").count() == 0
    assert page.locator(f'article.handler[data-handler="{BROKEN}"] h3 .badge').inner_text() == (
        "dead"
    )
    record = world.r.get(f"{world.stack.prefix}:delivery:{key}")
    assert record is not None and b"someone" not in record  # type: ignore[operator]
    dead_letter = world.r.get(f"{world.stack.prefix}:dlq:{key}|{BROKEN}")
    assert dead_letter is not None and b"someone" not in dead_letter  # type: ignore[operator]


def test_replay_from_the_page_runs_the_handler_exactly_once(world: World) -> None:
    key = world.post()
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    assert world.runs(BROKEN, key) == [1]
    page = world.signed_in()
    page.goto(f"{world.console.url}/events/{key}")
    world.r.set(world.ctl("mended"), 1)
    try:
        page.click(f'article.handler[data-handler="{BROKEN}"] button.replay')
        page.wait_for_selector(".flash")
        wait_for(lambda: world.state(key, BROKEN) == "done", what="the replay to finish")
        # Past when a late duplicate would show: the scheduler moves due work twice a second
        # and a lost run comes back after its lease (4 s in the test stack).
        time.sleep(5)
        assert world.runs(BROKEN, key) == [1, 1]  # the failed run, then the replay: once
    finally:
        world.r.delete(world.ctl("mended"))
    page.reload()
    assert (
        page.locator(f'article.handler[data-handler="{BROKEN}"] h3 .badge').inner_text() == "done"
    )
    audit = page.goto(f"{world.console.url}/audit")
    assert audit is not None
    assert "replay" in page.locator("#audit").inner_text()


def test_replay_every_failed_handler_replays_the_dead_ones_and_nothing_else(world: World) -> None:
    key = world.post()
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    page = world.signed_in()
    page.goto(f"{world.console.url}/events/{key}")
    page.click("#replay-failed")
    page.wait_for_selector(".flash")
    wait_for(lambda: world.runs(BROKEN, key) == [1, 1], what="the broken handler to run again")
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="it to give up again")
    fields = world.r.hkeys(f"{world.stack.prefix}:handled:{key}")
    # The ledger's and the indexes' own fields were not taken for handlers and replayed.
    assert not [f for f in fields if f.startswith(b"~") and f.endswith(b"#")]  # type: ignore[union-attr]
    assert world.runs("ledger.steady", key) == [1]


def test_bulk_replay_shows_progress_and_can_be_cancelled(world: World) -> None:
    profile = f"bulk{uuid.uuid4().hex[:6]}"
    keys = [world.post(profile_username=profile) for _ in range(30)]
    wait_for(
        lambda: all(world.state(k, BROKEN) == "dead" for k in keys),
        timeout=60,
        what="30 dead letters",
    )
    page = world.signed_in()
    page.goto(f"{world.console.url}/dead-letters?profile={profile}")
    assert page.locator("#dead tbody tr").count() == 30
    page.click("#estimate")
    assert page.locator("#estimate-count").inner_text() == "30"
    world.shot(page, "estimate")
    page.click("#start-bulk")
    job = page.locator("section.job").first
    # The bar moves while the page stays put (chunks of 2, 0.4 s apart: about 6 s in all).
    wait_for(
        lambda: 0 < int(job.locator("progress").get_attribute("value") or 0) < 30,
        timeout=15,
        what="progress",
    )
    world.shot(page, "dead-letters")
    job.locator("button.cancel").click()
    page.wait_for_selector("section.job .job-state:text('cancelled')", timeout=10_000)
    job = page.locator("section.job").first
    processed = int(job.locator("progress").get_attribute("value") or 0)
    assert 0 < processed < 30
    time.sleep(1.5)  # nothing more is processed after the cancel
    page.reload()
    assert int(page.locator("section.job progress").first.get_attribute("value") or 0) == processed
    # The handler ran again for the deliveries the job reached, and only for those.
    rerun = sum(len(world.runs(BROKEN, k)) > 1 for k in keys)
    assert 0 < rerun <= processed


def test_purging_a_filtered_set_deletes_exactly_its_dead_letters(world: World) -> None:
    profile = f"purge{uuid.uuid4().hex[:6]}"
    doomed = [world.post(profile_username=profile) for _ in range(3)]
    kept = world.post()
    every = [*doomed, kept]
    wait_for(lambda: all(world.state(k, BROKEN) == "dead" for k in every), what="dead letters")
    page = world.signed_in()
    page.goto(f"{world.console.url}/dead-letters/estimate?profile={profile}")
    assert page.locator("#estimate-count").inner_text() == "3"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#purge")
    page.wait_for_selector(".flash")

    def letter(key: str) -> bool:
        return bool(world.r.exists(f"{world.stack.prefix}:dlq:{key}|{BROKEN}"))

    assert [letter(k) for k in every] == [False, False, False, True]
    assert "purge" in world.r.lindex(f"{world.stack.prefix}:console:audit", 0).decode()  # type: ignore[union-attr]


def test_the_read_only_role_has_no_buttons_and_its_direct_post_is_refused(world: World) -> None:
    key = world.post()
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    page = world.signed_in("viewer")
    page.goto(f"{world.console.url}/events/{key}")
    assert page.locator("button.act, button.danger, button.replay").count() == 0
    page.goto(f"{world.console.url}/dead-letters")
    assert page.locator("button.cancel").count() == 0
    csrf = page.get_attribute("input[name=csrf]", "value")
    answer = page.request.post(
        f"{world.console.url}/events/{key}/replay",
        form={"csrf": csrf or "", "handler": BROKEN},
        headers={"Origin": world.console.url},
    )
    assert answer.status == 403
    assert "read-only" in answer.text()
    time.sleep(1.5)
    assert world.runs(BROKEN, key) == [1]
    assert world.state(key, BROKEN) == "dead"


def test_forged_form_posts_are_refused(world: World) -> None:
    key = world.post()
    wait_for(lambda: world.state(key, BROKEN) == "dead", what="the broken handler to give up")
    page = world.signed_in("ops")
    page.goto(f"{world.console.url}/events/{key}")
    csrf = page.get_attribute("input[name=csrf]", "value") or ""
    target = f"{world.console.url}/events/{key}/replay"
    own = {"Origin": world.console.url}
    # The operator's own session, but no token, a wrong token, or a foreign origin.
    for form, headers, why in (
        ({"handler": BROKEN}, own, "bad CSRF token"),
        ({"handler": BROKEN, "csrf": "x" * 43}, own, "bad CSRF token"),
        ({"handler": BROKEN, "csrf": csrf}, {"Origin": "https://evil.example"}, "foreign origin"),
    ):
        answer = page.request.post(target, form=form, headers=headers)
        assert answer.status == 403, why
        assert why in answer.text()
    # A page on another site that posts a form at the console: the browser sends no cookie
    # (SameSite=Strict), and the Origin is not ours either.
    evil = page.context.new_page()
    evil.route(
        "http://evil.example/**",
        lambda route: route.fulfill(
            content_type="text/html",
            body=(
                f'<form id="f" method="post" action="{target}">'
                f'<input name="handler" value="{BROKEN}"><input name="csrf" value="{csrf}">'
                "</form><script>document.getElementById('f').submit()</script>"
            ),
        ),
    )
    with evil.expect_response(lambda r: r.url == target) as forged:
        evil.goto("http://evil.example/")
    assert forged.value.status == 403
    time.sleep(1.5)
    assert world.runs(BROKEN, key) == [1]
    assert world.state(key, BROKEN) == "dead"


def test_overview_handlers_audit_and_sign_in_pages_render(world: World) -> None:
    page = world.signed_in()
    page.goto(f"{world.console.url}/overview")
    assert int(page.locator("#alive").inner_text()) >= 1
    assert "ledger.broken" in page.locator("#workers").inner_text()
    wait_for(
        lambda: page.reload() and page.locator("svg.chart polyline").count() > 0,
        timeout=15,
        what="chart lines from two samples",
    )
    world.shot(page, "overview")
    page.goto(f"{world.console.url}/handlers")
    text = page.locator("#handlers").inner_text()
    assert "ledger.broken" in text and "ledger.flaky" in text
    world.shot(page, "handlers")
    page.goto(f"{world.console.url}/audit")
    world.shot(page, "audit")
    page.goto(f"{world.console.url}/events?limit=25")
    world.shot(page, "events")
    fresh = world.browser.new_page()
    fresh.goto(world.console.url + "/events")
    assert fresh.url.endswith("/login")
    world.shot(fresh, "sign-in")
    fresh.close()
