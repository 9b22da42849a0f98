"""Where the running ``uphooks dev`` stack is, so the CLI finds it from the same folder.

``uphooks dev`` writes ``var/dev.json`` (its pid, the Redis URL it started or was given, the
ingress's URL) once Redis answers, and removes it when it stops. Other commands run from that
folder without ``REDIS_URL``/``UPHOOKS_REDIS_URL`` (in the environment or ``.env``) use that Redis
while the pid is alive; an explicit setting always wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

STATE_FILE = Path("var") / "dev.json"


@dataclass(frozen=True)
class DevStack:
    pid: int
    redis_url: str
    ingress_url: str
    webhook_url: str
    data_dir: str | None = None
    started_at: float = 0.0
    admin_url: str = ""  # the ingress's admin listener: /metrics, /readyz


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def write(stack: DevStack, path: Path = STATE_FILE) -> None:
    """Atomically, readable by this user only (a Redis URL may hold a password)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(asdict(stack) | {"started_at": stack.started_at or time.time()}, out, indent=2)
    tmp.replace(path)


def read(path: Path = STATE_FILE) -> DevStack | None:
    """The stack described there, or None (no file, unreadable, or its process is gone)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stack = DevStack(**data)
    except (OSError, ValueError, TypeError):
        return None
    return stack if _alive(stack.pid) else None


def remove(pid: int, path: Path = STATE_FILE) -> None:
    """Remove the file if it is this process's (a later stack may have replaced it)."""
    found = None
    with contextlib.suppress(OSError, ValueError):
        found = json.loads(path.read_text(encoding="utf-8")).get("pid")
    if found == pid:
        path.unlink(missing_ok=True)


def redacted(url: str) -> str:
    """A URL safe to print: the password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


def adopt(path: Path = STATE_FILE) -> DevStack | None:
    """Point this process's settings at the dev stack's Redis, when the settings name none.

    Returns the stack adopted, or None: a Redis URL was given, or no live stack is there.
    Settings that do not validate are left for the command to report.
    """
    from pydantic import ValidationError

    from uphooks.settings import get_settings

    try:
        if "redis_url" in get_settings().model_fields_set:
            return None
    except ValidationError:
        return None
    stack = read(path)
    if stack is None:
        return None
    # The Celery app and every client read the settings: one place to change it, for children too.
    os.environ["UPHOOKS_REDIS_URL"] = stack.redis_url
    get_settings.cache_clear()
    return stack
