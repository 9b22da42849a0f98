"""``uphooks dev``: the whole pipeline on one machine, for development.

An embedded Redis (unless ``REDIS_URL`` is set) is started first and stopped last; between the
two, honcho runs the Procfile's processes (ingress and worker). The stack stops on Ctrl-C,
SIGTERM and SIGHUP (a closed terminal, ``tmux kill-session``): honcho gives each child a session
of its own, so nothing else would stop them. The Redis data folder is locked while a server uses
it, so a second stack refuses to start instead of sharing it. ``var/dev.json`` tells the other
CLI commands where this stack is (``uphooks_cli/devstate.py``). Once the ingress answers and a
worker beats, the lines to try it are printed (the Celery banner would scroll them away).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import httpx
import redis

from uphooks.errors import ConfigurationError
from uphooks.keys import Keys
from uphooks.liveness import workers_seen
from uphooks.settings import Settings
from uphooks_cli import devstate
from uphooks_cli.embedded import DataDirLock, RedisServer, find_redis_server, free_port

FIXTURE_HINT = "tests/fixtures/upload_completed.json"
# How long start-up may take before we say what is missing (a first start imports a lot).
READY_WITHIN_SECONDS = 120.0


def _printer() -> Any:
    from honcho.printer import Printer  # type: ignore[import-untyped]

    class QuietPrinter(Printer):  # type: ignore[misc]
        """Honcho's printer, except that a closed terminal (EIO, EPIPE) is not an error: the
        supervisor must go on to stop its children."""

        def write(self, message: Any) -> None:
            with contextlib.suppress(OSError, ValueError):
                super().write(message)

    return QuietPrinter(sys.stdout)


def _port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _reachable(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _cli_path() -> str:
    """How to run this CLI from here: ``.venv/bin/uphooks`` when the venv is under this folder."""
    script = Path(sys.executable).parent / "uphooks"
    with contextlib.suppress(ValueError):
        return str(script.absolute().relative_to(Path.cwd()))
    return str(script)


def _detach_from_terminal() -> None:
    """After a hang-up the terminal is gone: writes to it fail. Point them at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if stat.S_ISCHR(os.fstat(fd).st_mode):
                os.dup2(devnull, fd)
    os.close(devnull)


class _Announcer(threading.Thread):
    """Waits for the ingress to answer and a worker to beat, then prints how to use the stack."""

    def __init__(
        self, say: Callable[[str], None], settings: Settings, stack: devstate.DevStack
    ) -> None:
        super().__init__(name="uphooks-dev-ready", daemon=True)
        self.say = say
        self.settings = settings
        self.stack = stack
        self.stopped = threading.Event()

    def _ingress_up(self) -> bool:
        try:
            return httpx.get(self.stack.ingress_url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _workers(self, client: redis.Redis) -> int:
        try:
            seen = workers_seen(
                client, Keys(self.settings.key_prefix), self.settings.heartbeat_stale_seconds
            )
        except redis.RedisError:
            return 0
        return seen.alive

    def run(self) -> None:
        client = redis.Redis.from_url(self.stack.redis_url, socket_timeout=2)
        deadline = time.monotonic() + READY_WITHIN_SECONDS
        ingress = workers = False
        try:
            while not self.stopped.wait(0.25):
                ingress = ingress or self._ingress_up()
                workers = workers or self._workers(client) > 0
                if ingress and workers:
                    self.say(self.ready_text())
                    return
                if time.monotonic() > deadline:
                    missing = [
                        what
                        for what, ok in (("the ingress", ingress), ("a worker", workers))
                        if not ok
                    ]
                    self.say(
                        f"not ready after {READY_WITHIN_SECONDS:.0f}s: no answer from "
                        f"{' or '.join(missing)}; see the lines above"
                    )
                    return
        finally:
            client.close()

    def ready_text(self) -> str:
        cli = _cli_path()
        return "\n".join(
            [
                f"ready: ingress {self.stack.ingress_url}, a worker, Redis "
                f"{devstate.redacted(self.stack.redis_url)}",
                "  post a sample delivery:",
                f"    curl -sS -X POST {self.stack.webhook_url} "
                f"-H 'Content-Type: application/json' --data @{FIXTURE_HINT}",
                *(
                    [f"  metrics and /readyz: {self.stack.admin_url}"]
                    if self.stack.admin_url
                    else []
                ),
                f"  the CLI finds this stack from this folder ({devstate.STATE_FILE}):",
                f"    {cli} status      # or: source {Path(cli).parent}/activate; uphooks status",
                f"  from elsewhere: export REDIS_URL={self.stack.redis_url}",
            ]
        )


def run(settings: Settings, *, host: str, port: int, redis_port: int, data_dir: str) -> NoReturn:
    from honcho.environ import parse_procfile  # type: ignore[import-untyped]
    from honcho.manager import Manager  # type: ignore[import-untyped]
    from honcho.printer import Message

    printer = _printer()

    def say(text: str) -> None:
        now = datetime.datetime.now()
        printer.write(Message(type="line", data=text + "\n", time=now, name="system", colour=None))

    if not Path("Procfile").is_file():
        raise ConfigurationError(
            "no Procfile in this folder: run `uphooks dev` (or `make run`) from the checkout's "
            "top folder, where the Procfile names the ingress and worker commands"
        )
    if not _port_is_free(host, port):
        raise ConfigurationError(
            f"port {port} on {host} is in use (another `uphooks dev`? see {devstate.STATE_FILE}): "
            "stop it, or choose another port with --port (make run PORT=...)"
        )
    # The admin listener (/metrics, /readyz): the next port, as 8000 and 8001, unless it is set
    # or taken (a second stack on another --port must not fail on the first one's).
    admin_port = settings.admin_port
    if "admin_port" not in settings.model_fields_set:
        admin_port = port + 1 if _port_is_free(settings.admin_host, port + 1) else free_port()
    # The Procfile says `uphooks ...`: make sure this interpreter's scripts are found first.
    scripts = str(Path(sys.executable).parent)
    env = dict(
        os.environ,
        PORT=str(port),
        WEB_HOST=host,
        UPHOOKS_ADMIN_PORT=str(admin_port),
        PATH=os.pathsep.join([scripts, os.environ.get("PATH", "")]),
    )
    if "log_format" not in settings.model_fields_set and sys.stderr.isatty():
        env["UPHOOKS_LOG_FORMAT"] = "plain"  # honcho pipes their output: "auto" would be JSON
    if "verify" not in settings.model_fields_set:
        env["UPHOOKS_VERIFY"] = "none"
        say("development: deliveries are not verified (set UPHOOKS_VERIFY to change that)")
    if host != "127.0.0.1" and env.get("UPHOOKS_VERIFY") == "none":
        say(f"warning: the ingress listens on {host} and does not verify deliveries")

    lock: DataDirLock | None = None
    server: RedisServer | None = None
    manager = Manager(printer=printer)
    try:
        if "redis_url" in settings.model_fields_set:
            redis_url = settings.redis_url
        else:
            lock = DataDirLock(Path(data_dir).resolve()).acquire()
            server = RedisServer(lock.data_dir, port=redis_port or free_port())
            server.start(lock=lock, own_session=True)
            redis_url = env["REDIS_URL"] = env["UPHOOKS_REDIS_URL"] = server.url
            say(f"embedded Redis ({find_redis_server()}) on {server.url}, data in {data_dir}")
        ingress_url = f"http://{_reachable(host)}:{port}"
        admin_url = f"http://{_reachable(settings.admin_host)}:{admin_port}" if admin_port else ""
        stack = devstate.DevStack(
            pid=os.getpid(),
            redis_url=redis_url,
            ingress_url=ingress_url,
            webhook_url=ingress_url + settings.webhook_path,
            admin_url=admin_url,
            data_dir=str(server.data_dir) if server else None,
        )
        devstate.write(stack)

        procfile = parse_procfile(Path("Procfile").read_text(encoding="utf-8"))
        for name, command in procfile.processes.items():
            manager.add_process(name, str(command), env=env)

        def hang_up(signum: int, frame: FrameType | None) -> None:
            _detach_from_terminal()
            manager.returncode = 128 + signal.SIGHUP
            manager.terminate()

        signal.signal(signal.SIGHUP, hang_up)
        announcer = _Announcer(say, settings, stack)
        announcer.start()
        try:
            manager.loop()  # handles SIGINT and SIGTERM the same way
        finally:
            announcer.stopped.set()
    finally:
        devstate.remove(os.getpid())
        if server is not None:
            server.stop()  # last: the worker removed its heartbeat while Redis still answered
            say(f"embedded Redis stopped; its data stays in {data_dir}")
        if lock is not None:
            lock.release()
    sys.exit(manager.returncode)
