"""Which handlers a worker loads, from where, and what ``uphooks handlers`` says about them.

The examples/ plugin package is installed with pip (into a folder of this test session, so other
tests' workers do not pick it up) and found through its ``uphooks.handlers`` entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from handlers.forward import forward_settings
from handlers.sql_settings import sql_settings
from handlers.telegram import telegram_settings
from handlers.upload_post_retry import upload_post_retry_settings
from tests.conftest import ROOT, Stack, fixture_bodies, wait_for
from uphooks.errors import ConfigurationError
from uphooks.settings import Settings
from workers.plugins import load_handlers

EXAMPLE = ROOT / "examples" / "uphooks-example"
BODIES = fixture_bodies()
#: telegram and forward read settings of their own, from the environment.
PLUGINS_ON = {
    "UPHOOKS_TELEGRAM_ENABLED": "true",
    "UPHOOKS_TELEGRAM_BOT_TOKEN": "1:t",
    "UPHOOKS_TELEGRAM_CHAT_ID": "1",
    "UPHOOKS_FORWARD_ENABLED": "true",
    "UPHOOKS_FORWARD_URLS": "https://a.internal/hook",
    "UPHOOKS_FORWARD_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
}


READS = (telegram_settings, forward_settings, sql_settings, upload_post_retry_settings)


def own_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Set the built-in plugins' variables for this test (their settings are read once)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for read in READS:
        read.cache_clear()


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ, PYTHONPATH=str(ROOT), UPHOOKS_HANDLER_MODULES="")
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "uphooks_cli", *args],
        env=full,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def handlers_json(**env: str) -> dict[str, dict[str, Any]]:
    done = cli("handlers", "--json", **env)
    assert done.returncode == 0, done.stderr
    return {row["name"]: row for row in json.loads(done.stdout)}


@pytest.fixture(autouse=True)
def _fresh_plugin_settings() -> Iterator[None]:
    yield
    for read in READS:
        read.cache_clear()


def test_builtins_are_loaded_when_their_settings_enable_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql = {"UPHOOKS_SQL_ENABLED": "true", "UPHOOKS_SQL_URL": f"sqlite:///{tmp_path}/x.db"}
    own_settings(monkeypatch, PLUGINS_ON | sql)
    loaded = load_handlers(Settings())
    assert loaded.sources == {
        "uphooks.log": "module handlers.log (UPHOOKS_BUILTIN_LOG_HANDLER)",
        "uphooks.telegram": "module handlers.telegram (UPHOOKS_TELEGRAM_ENABLED)",
        "uphooks.forward:a.internal/hook": "module handlers.forward (UPHOOKS_FORWARD_ENABLED)",
        "uphooks.sql": "module handlers.sql (UPHOOKS_SQL_ENABLED)",
    }
    own_settings(
        monkeypatch,
        {
            "UPHOOKS_TELEGRAM_ENABLED": "0",
            "UPHOOKS_FORWARD_ENABLED": "0",
            "UPHOOKS_SQL_ENABLED": "0",
        },
    )
    off = load_handlers(Settings(builtin_log_handler=False))
    assert list(off.router) == []


def test_a_builtin_named_in_handler_modules_is_the_same_as_enabling_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_settings(
        monkeypatch,
        {"UPHOOKS_SQL_ENABLED": "true", "UPHOOKS_SQL_URL": f"sqlite:///{tmp_path}/x.db"},
    )
    settings = Settings(handler_modules=["handlers.sql"], builtin_log_handler=False)
    assert load_handlers(settings).sources == {
        "uphooks.sql": "module handlers.sql (UPHOOKS_SQL_ENABLED)"
    }


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"UPHOOKS_TELEGRAM_ENABLED": "true"},
            r"handler module 'handlers.telegram' \(from UPHOOKS_TELEGRAM_ENABLED\): "
            "UPHOOKS_TELEGRAM_BOT_TOKEN is not set",
        ),
        ({"handler_modules": ["handlers.forward"]}, "UPHOOKS_FORWARD_URLS is empty"),
        (
            {"handler_modules": ["tests.plugins.does_not_exist"]},
            r"'tests.plugins.does_not_exist' \(from UPHOOKS_HANDLER_MODULES\) failed to import",
        ),
        (
            {"handler_modules": ["tests.plugins.too_slow"]},
            r"'test.too_slow' .* time_limit=100000s, not below UPHOOKS_TASK_SOFT_TIME_LIMIT",
        ),
    ],
)
def test_what_would_lose_events_stops_the_start(
    settings: dict[str, Any], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in settings.items() if k.startswith("UPHOOKS_")}
    own_settings(monkeypatch, env)
    core = {k: v for k, v in settings.items() if k not in env}
    with pytest.raises(ConfigurationError, match=message):
        load_handlers(Settings(**core))


def test_a_module_may_build_its_router_from_settings() -> None:
    modules = ["tests.plugins.configured"]
    loaded = load_handlers(Settings(queue="q1", handler_modules=modules, builtin_log_handler=False))
    spec = loaded.router.get("test.configured")
    assert spec is not None and spec.queue == "q1.configured"
    assert loaded.sources["test.configured"] == (
        "module tests.plugins.configured (UPHOOKS_HANDLER_MODULES)"
    )


def test_uphooks_handlers_shows_source_filters_queue_and_retry_policy() -> None:
    env = {
        "UPHOOKS_HANDLER_MODULES": "tests.plugins.queued,tests.plugins.timed",
        "UPHOOKS_QUEUE": "main",
        "UPHOOKS_RETRY_MAX_ATTEMPTS": "6",
        "UPHOOKS_RETRY_BASE_DELAY_SECONDS": "5",
        "UPHOOKS_RETRY_MAX_DELAY_SECONDS": "600",
        "UPHOOKS_TELEGRAM_ENABLED": "true",
        "UPHOOKS_TELEGRAM_BOT_TOKEN": "1:secret-token",
        "UPHOOKS_TELEGRAM_CHAT_ID": "7",
        "UPHOOKS_TELEGRAM_SUCCESS": "false",
        "UPHOOKS_TELEGRAM_PLATFORMS": "tiktok,x",
        "UPHOOKS_TELEGRAM_QUEUE": "notify",
    }
    rows = handlers_json(**env)
    assert rows["uphooks.telegram"] == {
        "name": "uphooks.telegram",
        "source": "module handlers.telegram (UPHOOKS_TELEGRAM_ENABLED)",
        "events": ["*"],
        "filters": {"platform": ["tiktok", "x"], "success": [False]},
        "queue": "notify",
        "max_attempts": 6,
        "backoff": {"base_seconds": 5.0, "max_seconds": 600.0},
        "time_limit_seconds": Settings().task_soft_time_limit_seconds,
        "ordered_by": None,
        "async": True,
        "concurrency": Settings().async_concurrency,
        "rate": {"telegram:bot:1": "30/s", "telegram:chat:7": "1/s"},
        "defaults": ["backoff", "max_attempts", "time_limit"],
    }
    slow = rows["test.slow"]
    assert slow["source"] == "module tests.plugins.queued (UPHOOKS_HANDLER_MODULES)"
    assert (slow["queue"], slow["backoff"]) == (
        "main.slow",
        {"base_seconds": 0.1, "max_seconds": 0.3},
    )
    timed = rows["test.timed"]
    assert (timed["time_limit_seconds"], timed["max_attempts"]) == (1, 3)
    assert rows["test.fast"]["queue"] == "main"
    assert rows["uphooks.log"]["source"] == "module handlers.log (UPHOOKS_BUILTIN_LOG_HANDLER)"

    text = cli("handlers", **env)
    assert text.returncode == 0, text.stderr
    assert "secret-token" not in text.stdout
    block = text.stdout.split("uphooks.telegram\n", 1)[1].split("\n\n")[0]
    assert "events:  *  where platform=tiktok,x success=False" in block
    assert "queue:   notify" in block
    assert "retries: 6 attempts, backoff 5s doubling up to 600s" in block
    assert "limit:   1s per call" in text.stdout.split("test.timed\n", 1)[1]


def test_uphooks_handlers_names_the_module_that_would_stop_a_worker() -> None:
    done = cli("handlers", UPHOOKS_HANDLER_MODULES="tests.plugins.does_not_exist")
    assert done.returncode == 1
    assert "a worker would not start" in done.stderr
    assert "tests.plugins.does_not_exist" in done.stderr
    assert "Traceback" not in done.stderr


# -- plugins installed as packages ------------------------------------------------------------


def _install(target: Path, project: Path) -> None:
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    done = subprocess.run(
        [*pip, "--disable-pip-version-check", "--target", str(target), str(project)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"pip install {project} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/uphooks-example, pip-installed into a folder given to the processes below."""
    target = tmp_path_factory.mktemp("example-site")
    # Built from a copy, so the build leaves nothing in the source tree.
    source = tmp_path_factory.mktemp("example-src") / EXAMPLE.name
    skip = shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    shutil.copytree(EXAMPLE, source, ignore=skip)
    _install(target, source)
    return target


def test_the_example_package_is_found_through_its_entry_point(example_site: Path) -> None:
    rows = handlers_json(
        PYTHONPATH=f"{ROOT}{os.pathsep}{example_site}", UPHOOKS_BUILTIN_LOG_HANDLER="false"
    )
    assert sorted(rows) == ["example.account_attention", "example.failed_upload"]
    source = "entry point example = uphooks_example.handlers, package uphooks-example 0.1.0"
    assert {row["source"] for row in rows.values()} == {source}
    failed = rows["example.failed_upload"]
    assert (failed["events"], failed["filters"], failed["max_attempts"]) == (
        ["upload_completed"],
        {"success": [False]},
        5,
    )
    attention = rows["example.account_attention"]
    assert attention["backoff"] == {"base_seconds": 2.0, "max_seconds": 60.0}
    assert attention["time_limit_seconds"] == 10


def test_the_example_package_runs_in_a_real_worker(
    stack: Stack, example_site: Path, tmp_path: Path
) -> None:
    db = tmp_path / "example" / "attention.sqlite3"
    ingress = stack.ingress()
    stack.worker(
        "",
        PYTHONPATH=f"{ROOT}{os.pathsep}{example_site}",
        UPHOOKS_BUILTIN_LOG_HANDLER="false",
        UPHOOKS_EXAMPLE_DB_PATH=str(db),
    )
    keys = {
        name: ingress.post(BODIES[name]).json()["idempotency_key"]
        for name in (
            "upload_completed.json",
            "upload_completed_failed.json",
            "social_account_reauth_required.json",
        )
    }

    def table(name: str) -> list[tuple[Any, ...]]:
        if not db.exists():
            return []
        with closing(sqlite3.connect(db)) as conn:  # Python 3.13 warns about one left open
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            return list(conn.execute(f"SELECT * FROM {name}")) if name in tables else []

    failed_key = keys["upload_completed_failed.json"]
    reauth_key = keys["social_account_reauth_required.json"]
    wait_for(lambda: len(table("failed_uploads")) == 1 and len(table("account_attention")) == 1)
    assert table("failed_uploads")[0][:2] == (f"{failed_key}:example.failed_upload", "tiktok")
    assert table("account_attention")[0][:3] == (
        f"{reauth_key}:example.account_attention",
        "youtube",
        "UCxxxxxxxxx",
    )
    stack.wait_settled(failed_key, {"example.failed_upload": "done"})
    # A successful upload matches none of the example's handlers: recorded as routed to none.
    stack.wait_settled(keys["upload_completed.json"], {"~": "0"})
    ok = stack.client().hgetall(f"{stack.prefix}:handled:{keys['upload_completed.json']}")
    assert ok == {b"~": b"0"}


def test_the_example_packages_own_tests_pass(example_site: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=EXAMPLE,
        env=dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{example_site}"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_a_plugin_package_that_fails_to_import_stops_the_worker(
    stack: Stack, tmp_path: Path
) -> None:
    project = tmp_path / "broken-plugin"
    (project / "broken_plugin").mkdir(parents=True)
    (project / "broken_plugin" / "__init__.py").write_text(
        "raise RuntimeError('the plugin cannot reach its config')\n"
    )
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "broken-plugin"\nversion = "1.0"\n'
        '[project.entry-points."uphooks.handlers"]\nbroken = "broken_plugin"\n'
        '[tool.setuptools]\npackages = ["broken_plugin"]\n'
    )
    site = tmp_path / "site"
    _install(site, project)
    path = f"{ROOT}{os.pathsep}{site}"
    with pytest.raises(RuntimeError, match=r"handler plugin 'broken' .*cannot reach its config"):
        stack.worker("", PYTHONPATH=path)
    done = cli("handlers", PYTHONPATH=path)
    assert done.returncode == 1
    assert "package broken-plugin" not in done.stderr  # it never loaded
    assert "'broken' (entry point 'broken_plugin'" in done.stderr
