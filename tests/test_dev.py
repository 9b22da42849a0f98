"""`uphooks dev` as a newcomer runs it: the CLI finds the stack from its folder, the ingress
listens on 127.0.0.1, a hang-up stops Redis, ingress and worker, and a second stack cannot
share a Redis data folder. Real processes throughout."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, wait_for
from tests.test_readme import readme_handler_module
from uphooks.errors import ConfigurationError
from uphooks_cli.embedded import DataDirLock, RedisServer, free_port


def dev_env(**extra: str) -> dict[str, str]:
    """A newcomer's shell: no Redis named anywhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "UPHOOKS_REDIS_URL")}
    env.update(PYTHONPATH=str(ROOT), UPHOOKS_HEARTBEAT_INTERVAL_SECONDS="0.5", **extra)
    return env


def uphooks(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uphooks_cli", *args],
        cwd=folder,
        env=dev_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening_address(port: int) -> str | None:
    """The IPv4 address a socket listens on for ``port`` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        host, hex_port = local.split(":")
        if int(hex_port, 16) == port and state == "0A":
            return socket.inet_ntoa(bytes.fromhex(host)[::-1])
    return None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A checkout's working folder: the Procfile, and the fixtures the ready lines mention."""
    shutil.copy(ROOT / "Procfile", tmp_path / "Procfile")
    return tmp_path


@pytest.fixture
def dev(folder: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, int]]:
    port = free_port()
    log = folder / "dev.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uphooks_cli", "dev", "--port", str(port)],
            cwd=folder,
            env=dev_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: "ready: ingress" in log.read_text(errors="replace") or proc.poll() is not None,
            timeout=90,
            what="the ready lines",
        )
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        yield proc, log, port
    finally:
        family = descendants(proc.pid) | {proc.pid}
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc")
def test_the_cli_finds_the_dev_stack_and_a_hang_up_stops_all_of_it(
    dev: tuple[subprocess.Popen[bytes], Path, int], folder: Path
) -> None:
    proc, log, port = dev
    state = json.loads((folder / "var" / "dev.json").read_text())
    assert state["pid"] == proc.pid and state["ingress_url"] == f"http://127.0.0.1:{port}"
    text = log.read_text(errors="replace")
    assert f"curl -sS -X POST http://127.0.0.1:{port}/webhooks/upload-post" in text
    assert "uphooks status" in text and f"export REDIS_URL={state['redis_url']}" in text
    # The ready lines come after the worker's start-up lines, not buried above them.
    assert text.index("ready: ingress") > text.index(" ready.")
    assert listening_address(port) == "127.0.0.1"

    # From the stack's folder, with no Redis named, the CLI uses the stack's Redis and ingress.
    status = uphooks(folder, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["workers"]["alive"] == 1
    assert "using the `uphooks dev` stack" in status.stderr
    sent = uphooks(folder, "send", "upload_completed", "--json")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert json.loads(sent.stdout)["url"] == state["webhook_url"]

    def handled() -> bool:
        listed = uphooks(folder, "events", "ls", "--json")
        rows = json.loads(listed.stdout) if listed.returncode == 0 else []
        return len(rows) == 1 and rows[0]["status"] == "done"

    wait_for(handled, timeout=30, interval=0.5, what="the delivery handled")

    # The README's handler, saved here, run by a second worker beside the stack (the way that
    # silently skipped handlers): it joins the stack's Redis, and both workers say they differ.
    (folder / "myhooks.py").write_text(readme_handler_module(), encoding="utf-8")
    second_log = folder / "second-worker.log"
    with second_log.open("ab") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "uphooks_cli", "worker", "-c", "1", "--without-mingle"],
            cwd=folder,
            env=dev_env(UPHOOKS_HANDLER_MODULES="myhooks"),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(
            lambda: (
                "HANDLER MISMATCH" in log.read_text(errors="replace")
                and "HANDLER MISMATCH" in second_log.read_text(errors="replace")
            ),
            timeout=40,
            what="the mismatch in both workers' logs",
        )
        mixed = uphooks(folder, "status")
        assert mixed.returncode == 1
        assert "lacks myhooks.audit, myhooks.tell_the_team" in mixed.stdout
    finally:
        os.killpg(second.pid, signal.SIGTERM)
        second.wait(timeout=30)

    family = descendants(proc.pid)
    redis_pids = [p for p in family if b"redis-server" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert redis_pids and len(family) >= 3  # redis, ingress, worker (and their helpers)
    os.kill(proc.pid, signal.SIGHUP)  # what closing the terminal sends
    assert proc.wait(timeout=30) != 0
    wait_for(lambda: not any(running(p) for p in family), timeout=15, what="every child to stop")
    assert not (folder / "var" / "dev.json").exists()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(state["redis_url"], socket_connect_timeout=1).ping()
    text = log.read_text(errors="replace")
    # Redis stopped last: the worker could still remove its heartbeat.
    assert "worker stopped" in text and "embedded Redis stopped" in text
    assert "not removed" not in text

    # With the stack gone and a Redis nobody answers at: one line, no traceback.
    gone = uphooks(folder, "status", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert gone.returncode == 1
    assert gone.stderr.startswith("Error: cannot reach Redis at redis://127.0.0.1:")
    assert len(gone.stderr.strip().splitlines()) == 1 and "Traceback" not in gone.stderr


def test_a_second_stack_refuses_a_data_folder_and_a_port_in_use(
    folder: Path, tmp_path: Path
) -> None:
    data = tmp_path / "redis-data"
    lock = DataDirLock(data).acquire()
    server = RedisServer(data).start(lock=lock, own_session=True)
    lock.release()  # as if the `uphooks dev` that started it was killed: the server holds it
    try:
        with pytest.raises(ConfigurationError, match=f"redis-server pid {server.process.pid}"):  # type: ignore[union-attr]
            DataDirLock(data).acquire()
        refused = uphooks(folder, "dev", "--port", str(free_port()), "--data-dir", str(data))
        assert refused.returncode == 1
        assert refused.stderr.startswith(f"Error: the Redis data folder {data} is in use")
        assert "Traceback" not in refused.stderr + refused.stdout
    finally:
        server.stop()
    DataDirLock(data).acquire().release()  # free again once that server stopped

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        refused = uphooks(folder, "dev", "--port", str(taken), "--data-dir", str(data))
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"Error: port {taken} on 127.0.0.1 is in use")


@pytest.mark.parametrize("command", ["serve", "dev", "worker", "status", "events ls", "dlq ls"])
def test_a_settings_mistake_is_one_line_from_every_command(folder: Path, command: str) -> None:
    result = uphooks(folder, *command.split(), UPHOOKS_ACK_TIMEOUT_SECONDS="20")
    assert result.returncode == 1
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert lines == [
        "Error: invalid settings: UPHOOKS_ACK_TIMEOUT_SECONDS must stay below the sender's "
        "~10 s timeout (from the environment or .env; every setting is described in "
        "uphooks/settings*.py)"
    ]


@pytest.mark.parametrize(
    "command", ["status", "events ls", "events show k", "dlq ls", "dlq show x", "dlq replay --all"]
)
def test_an_unreachable_redis_is_one_line_from_every_command(folder: Path, command: str) -> None:
    url = f"redis://:secret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = uphooks(folder, *command.split(), REDIS_URL=url)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert len(result.stderr.strip().splitlines()) == 1 and "secret" not in result.stderr
    assert time.monotonic() - started < 30
