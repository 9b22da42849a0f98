"""Where Redis Sentinel says the master is: the sentinels, the master's name, the passwords.

Sentinel is used when ``UPHOOKS_REDIS_SENTINELS`` lists sentinels or the Redis URL is a
``sentinel://`` one (kombu's form, several sentinels joined by ``;``)::

    sentinel://[[user]:password@]host[:port][;sentinel://host[:port]...][/db][?master_name=NAME]

The password in the URL (or ``UPHOOKS_REDIS_PASSWORD``) is the master's; the sentinels' own
password, if they have one, is ``UPHOOKS_REDIS_SENTINEL_PASSWORD`` (or ``?sentinel_password=``).
Every client the project makes (uphooks/redis.py) and the Celery broker (workers/app.py) are built
from one :class:`SentinelTarget`, so the ingress, the workers and the CLI follow the same master.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, quote, unquote, urlsplit

DEFAULT_PORT = 26379


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    def broker_url(self) -> str:
        """kombu's form: every sentinel a ``sentinel://`` URL of its own, joined by ``;``."""
        cred = ""
        if self.password is not None:
            cred = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return ";".join(f"sentinel://{cred}{h}:{p}/{self.db}" for h, p in self.sentinels)

    def describe(self) -> str:
        """For messages: the master's name and the sentinels, never a password."""
        where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"sentinel master {self.master_name!r} via {where} (db {self.db})"


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.strip().rpartition(":")
    if not sep:
        host, port = port, str(DEFAULT_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit():
        raise ValueError(f"a sentinel must be host:port, got {text!r}")
    return host, int(port)


def sentinel_target(
    url: str,
    sentinels: list[str],
    master_name: str | None,
    password: str | None = None,
    sentinel_password: str | None = None,
) -> SentinelTarget | None:
    """The Sentinel set-up the settings describe, or None for a plain ``redis(s)://`` URL.

    Raises ValueError (with what to set) when Sentinel is asked for but incomplete.
    """
    is_sentinel_url = url.startswith("sentinel://")
    if not is_sentinel_url and not sentinels:
        return None
    found: list[tuple[str, int]] = []
    db = 0
    username: str | None = None
    url_password: str | None = None
    query: dict[str, list[str]] = {}
    segments = url.split(";") if is_sentinel_url else [url]
    for segment in segments:
        parts = urlsplit(segment)
        if is_sentinel_url:
            if parts.scheme != "sentinel" or not parts.hostname:
                raise ValueError("each part of a sentinel:// URL must be sentinel://host:port")
            found.append((parts.hostname, parts.port or DEFAULT_PORT))
        if parts.password is not None and url_password is None:
            url_password = unquote(parts.password)
            username = unquote(parts.username) if parts.username else None
        if parts.path.strip("/"):
            db_text = parts.path.strip("/")
            if not db_text.isdigit():
                raise ValueError(f"the database in the Redis URL must be a number, got {db_text!r}")
            db = int(db_text)
        for field_name, values in parse_qs(parts.query).items():
            query.setdefault(field_name, values)
    found += [_host_port(s) for s in sentinels]
    names = query.get("master_name") or query.get("service_name") or []
    name = master_name or (names[0] if names else None)
    if not name:
        raise ValueError(
            "Redis Sentinel needs the master's name: set UPHOOKS_REDIS_MASTER_NAME (the name in "
            "the sentinels' `sentinel monitor NAME ...` line) or add ?master_name=NAME to the URL"
        )
    spws = query.get("sentinel_password") or []
    spw = sentinel_password or (spws[0] if spws else None)
    return SentinelTarget(
        sentinels=tuple(dict.fromkeys(found)),
        master_name=name,
        db=db,
        username=username,
        password=url_password if url_password is not None else password,
        sentinel_password=spw,
    )
