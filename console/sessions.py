"""Signed-in sessions, kept in Redis so any console process behind a proxy knows them.

The cookie holds a random id and nothing else; Redis holds ``<prefix>:console:session:<sha256
of the id>`` (the id itself is never stored, so a read of Redis cannot be replayed as a cookie)
with the identity and the session's CSRF token. Cookies are HttpOnly, SameSite=Strict, and
Secure with the ``__Host-`` prefix unless UPHOOKS_CONSOLE_SECURE_COOKIES is off.

Failed sign-ins are counted per user name and per source address over 15 minutes (token
sign-ins per source only); past UPHOOKS_CONSOLE_LOGIN_ATTEMPTS the sign-in is refused before
any password is checked.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import orjson
import redis
from starlette.requests import Request
from starlette.responses import Response

from console.credentials import Identity, parse_role
from uphooks.settings import Settings

LOCKOUT_SECONDS = 15 * 60


@dataclass(frozen=True)
class Session:
    who: Identity
    csrf: str


class Sessions:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._r = client
        self._prefix = f"{settings.key_prefix}:console"
        self._ttl = settings.console_session_seconds
        self._secure = settings.console_secure_cookies
        self._path = settings.console_root_path or "/"
        self._attempts = settings.console_login_attempts
        self.cookie = "__Host-uphooks-console" if self._secure else "uphooks-console"

    def _key(self, sid: str) -> str:
        return f"{self._prefix}:session:{hashlib.sha256(sid.encode()).hexdigest()}"

    def start(self, who: Identity, response: Response) -> Session:
        sid = secrets.token_urlsafe(32)
        session = Session(who, secrets.token_urlsafe(32))
        data = {"name": who.name, "role": who.role, "via": who.via, "csrf": session.csrf}
        self._r.set(self._key(sid), orjson.dumps(data), ex=self._ttl)
        response.set_cookie(
            self.cookie,
            sid,
            max_age=self._ttl,
            # __Host- cookies must have Path=/; a console under a prefix keeps its own path.
            path="/" if self._secure else self._path,
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )
        return session

    def find(self, request: Request) -> Session | None:
        sid = request.cookies.get(self.cookie)
        if not sid or len(sid) > 100:
            return None
        raw = self._r.get(self._key(sid))
        if raw is None:
            return None
        data = orjson.loads(raw)
        who = Identity(str(data["name"]), parse_role(str(data["role"])), data["via"])
        return Session(who, str(data["csrf"]))

    def end(self, request: Request, response: Response) -> None:
        sid = request.cookies.get(self.cookie)
        if sid:
            self._r.delete(self._key(sid))
        response.delete_cookie(
            self.cookie,
            path="/" if self._secure else self._path,
            secure=self._secure,
            httponly=True,
            samesite="strict",
        )

    # -- guessing ---------------------------------------------------------------------------
    def _fail_keys(self, name: str | None, source: str) -> list[str]:
        keys = [f"{self._prefix}:failed:ip:{source}"]
        if name is not None:  # a user name; tokens have none, so they count per source only
            digest = hashlib.sha256(name.encode()).hexdigest()[:32]
            keys.append(f"{self._prefix}:failed:user:{digest}")
        return keys

    def locked_out(self, name: str | None, source: str) -> bool:
        counts = self._r.mget(self._fail_keys(name, source))
        return any(int(c or 0) >= self._attempts for c in counts)

    def failed(self, name: str | None, source: str) -> None:
        pipe = self._r.pipeline(transaction=False)
        for key in self._fail_keys(name, source):
            pipe.incr(key)
            pipe.expire(key, LOCKOUT_SECONDS, nx=True)
        pipe.execute()
