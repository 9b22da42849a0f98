"""``make bench-console-pages``: the console's pages over HTTP, 1,000,000 deliveries kept.

bench/console.py times the store's queries; this times what a browser waits for: a real
``uphooks console`` process (uvicorn, sign-in session, Jinja2 rendering) answering GET requests
for the Events list (first page, filtered, 20 pages deep) and for one event, on a private
Redis filled by bench/console.py's ``fill`` (the real ingress and ledger scripts). The baseline,
measured in the same run right beside each page: the store call that page makes, in this
process. p50/p95 in milliseconds, the ratio page/store, and ``uptime``. Not a test: figures.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
from html import unescape
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench.console import timed
from bench.console_fill import PREFIX, fill
from console.store import ConsoleStore, EventQuery
from harness import commands, procs, wait
from uphooks.keys import Keys
from uphooks.settings import Settings
from uphooks_cli.embedded import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-" + "0123456789abcdef" * 3
_NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


def start_console(redis_url: str, log: Path) -> tuple[procs.Popen, str]:
    port = free_port()
    env = dict(
        os.environ,
        UPHOOKS_REDIS_URL=redis_url,
        REDIS_URL=redis_url,
        UPHOOKS_KEY_PREFIX=PREFIX,
        UPHOOKS_QUEUE="bq",
        UPHOOKS_CONSOLE_TOKENS=f"bench:read-only:{TOKEN}",
        UPHOOKS_CONSOLE_SECURE_COOKIES="false",
        UPHOOKS_CONSOLE_METRICS_URLS="http://127.0.0.1:9/metrics",
        UPHOOKS_LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    proc = procs.spawn(commands.cli("console", "--port", str(port)), env, log)
    try:
        wait.until_listening(proc, port, log, what="console")
    except RuntimeError:
        procs.kill(proc)
        raise
    return proc, f"http://127.0.0.1:{port}"


def deep_link(http: httpx.Client, path: str, pages: int) -> str | None:
    """The page's "older" link followed ``pages`` times, as a user clicks it."""
    for _ in range(pages):
        found = _NEXT.search(http.get(path).text)
        if found is None:
            return None
        path = unescape(found.group(1))
    return path


def measure(http: httpx.Client, store: ConsoleStore, client: redis.Redis, repeat: int) -> Any:
    lists = {
        "no filter": ("/events", EventQuery()),
        "state=dead": ("/events?state=dead", EventQuery(state="dead")),
        "platform=tiktok": ("/events?platform=tiktok", EventQuery(platform="tiktok")),
        "handler=app.notify+state=dead": (
            "/events?handler=app.notify&state=dead",
            EventQuery(handler="app.notify", state="dead"),
        ),
        "event+platform+profile": (
            "/events?event=upload_completed&platform=instagram&profile=profile-0000",
            EventQuery(event="upload_completed", platform="instagram", profile="profile-0000"),
        ),
    }
    out: dict[str, Any] = {}

    def row(path: str, baseline: Any) -> dict[str, Any]:
        def get() -> None:
            answer = http.get(path)
            assert answer.status_code == 200 and 'id="events"' in answer.text, path

        page = timed(get, repeat)
        base = timed(baseline, repeat)
        return {
            "page": page,
            "store (baseline)": base,
            "p95 ratio page/store": round(page["p95_ms"] / max(base["p95_ms"], 0.01), 1),
        }

    for name, (path, q) in lists.items():
        out[f"events list, {name}, page 1"] = row(
            path,
            lambda q=q: (store.list_events(q), store.counts()),
        )
        print(f"  {name}: {out[f'events list, {name}, page 1']}", flush=True)
    deep = deep_link(http, "/events?platform=tiktok", 20)
    if deep is not None:
        cursor = deep.split("cursor=")[1].split("&")[0]
        q = EventQuery(platform="tiktok", cursor=httpx.QueryParams(f"c={cursor}")["c"])
        out["events list, platform=tiktok, page 21"] = row(
            deep, lambda: (store.list_events(q), store.counts())
        )
    total = int(client.zcard(f"{PREFIX}:events"))
    rnd = random.Random(5)
    keys = []
    for i in rnd.sample(range(total), 100):
        member: list[bytes] = client.zrange(f"{PREFIX}:events", i, i)  # type: ignore[assignment]
        keys.append(member[0].decode())
    picks = iter(keys * (repeat // len(keys) + 2))
    base_picks = iter(keys * (repeat // len(keys) + 2))

    def one_event() -> None:
        answer = http.get(f"/events/{next(picks)}")
        assert answer.status_code == 200 and "<h2>Handlers</h2>" in answer.text

    out["one event (random)"] = {
        "page": timed(one_event, repeat),
        "store (baseline)": timed(lambda: store.event(next(base_picks)), repeat),
    }
    print(f"  one event: {out['one event (random)']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="deliveries retained")
    parser.add_argument("--repeat", type=int, default=200, help="requests per page")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"n": args.n, "uptime before": os.popen("uptime").read().strip()}
    with tempfile.TemporaryDirectory(prefix="uphooks-bench-pages-") as tmp:
        workdir = Path(tmp)
        server = RedisServer(workdir / "redis").start()
        proc = None
        try:
            client = redis.Redis.from_url(server.url)
            client.config_set("appendonly", "no")
            settings = Settings(
                redis_url=server.url, key_prefix=PREFIX, queue="bq", enqueue_batch_max=256
            )
            print(f"filling {args.n:,} deliveries (bench/console.py's fill):", flush=True)
            report["fill seconds"] = round(fill(settings, client, args.n), 1)
            store = ConsoleStore(client, Keys(PREFIX), settings.dedup_ttl_seconds)
            report["counts"] = store.counts()
            proc, url = start_console(server.url, workdir / "console.log")
            with httpx.Client(
                base_url=url, headers={"Origin": url}, timeout=30, follow_redirects=True
            ) as http:
                signed = http.post("/login", data={"token": TOKEN})
                assert signed.status_code == 200 and "Events" in signed.text, signed.text[:300]
                report["uptime measuring"] = os.popen("uptime").read().strip()
                report["pages"] = measure(http, store, client, args.repeat)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=15)
            server.stop()
    report["uptime after"] = os.popen("uptime").read().strip()
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    if args.json:
        args.json.write_bytes(text)
    print(text.decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
