"""A console process beside the test Stack (tests/conftest.py), and the browser that reads it.

``start_console`` runs ``uphooks console`` as a user would, against the stack's Redis and key
prefix. ``chromium`` finds Debian's Chromium on the PATH and installs it (``apt-get install -y
chromium chromium-driver``) when it is missing and this runs as root; when it truly cannot, the
browser tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from console.credentials import hash_password
from tests.conftest import ROOT, Stack
from uphooks_cli.embedded import free_port

PASSWORDS = {"ops": "correct horse battery", "viewer": "viewer horse battery"}
TOKEN = "t" * 8 + "-console-test-token-0123456789abcdef"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def console_env() -> dict[str, str]:
    """Two users (operator and read-only) and one operator token; cheap hashes for speed."""
    users = ",".join(
        f"{name}:{'operator' if name == 'ops' else 'read-only'}:{hash_password(pw, log2_n=10)}"
        for name, pw in PASSWORDS.items()
    )
    return {
        "UPHOOKS_CONSOLE_USERS": users,
        "UPHOOKS_CONSOLE_TOKENS": f"robot:operator:{TOKEN}",
        "UPHOOKS_CONSOLE_SECURE_COOKIES": "false",
        "UPHOOKS_CONSOLE_SAMPLE_SECONDS": "1",
    }


@dataclass
class Console:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path


def start_console(stack: Stack, **env: str) -> Console:
    port = free_port()
    log_name = f"console-{port}.log"
    proc = stack._spawn(
        [sys.executable, "-m", "uphooks_cli", "console", "--port", str(port)],
        log_name,
        stack.env(**(console_env() | env)),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return Console(url, proc, stack.tmp / log_name)
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"console did not start: {(stack.tmp / log_name).read_text()[-3000:]}")


def chromium() -> str:
    """The Chromium to drive, installed first when missing (root with apt-get only)."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (
            ["apt-get", "install", "-y", "chromium", "chromium-driver"],
            ["apt-get", "update"],
            ["apt-get", "install", "-y", "chromium", "chromium-driver"],
        ):
            subprocess.run(
                command,
                capture_output=True,
                timeout=600,
                check=False,
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
            )
            found = shutil.which("chromium")
            if found:
                return found
        reason = "`apt-get install -y chromium chromium-driver` did not give a chromium"
    else:
        reason = "chromium is not installed and this is not root with apt-get to install it"
    print(f"browser tests skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


def screenshots_dir() -> Path | None:
    """Where to write the docs' screenshots (UPHOOKS_SCREENSHOTS=docs/img), if anywhere."""
    where = os.environ.get("UPHOOKS_SCREENSHOTS")
    if not where:
        return None
    path = Path(where) if Path(where).is_absolute() else ROOT / where
    path.mkdir(parents=True, exist_ok=True)
    return path
