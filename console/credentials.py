"""Who may sign in to the console, and with which role: read from the settings, checked here.

Passwords are kept as scrypt hashes (``uphooks console hash-password`` makes one), in a form
without ``$`` or ``,`` so it survives .env files, compose files and the comma-separated list:
``scrypt.<log2 n>.<r>.<p>.<salt>.<hash>`` (salt and hash base64url). Tokens are compared in
constant time. Nothing here ever returns a secret, only a name and a role.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

from uphooks.errors import ConfigurationError
from uphooks.settings import Settings

Role = Literal["operator", "read-only"]
ROLES: tuple[Role, ...] = ("operator", "read-only")

_LOG2_N, _R, _P = 15, 8, 1  # 32 MiB and ~50 ms per check: slow to guess, quick to sign in
_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class Identity:
    """A signed-in person or token: the name shown in the audit list, and the role."""

    name: str
    role: Role
    via: Literal["password", "token"]

    @property
    def can_act(self) -> bool:
        return self.role == "operator"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, log2_n: int = _LOG2_N) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=2**log2_n, r=_R, p=_P, maxmem=_MAXMEM, dklen=32
    )
    return f"scrypt.{log2_n}.{_R}.{_P}.{_b64(salt)}.{_b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, log2_n, r, p, salt, digest = stored.split(".")
        if kind != "scrypt" or not 10 <= int(log2_n) <= 20:
            return False
        found = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=2 ** int(log2_n),
            r=int(r),
            p=int(p),
            maxmem=_MAXMEM,
            dklen=len(_unb64(digest)),
        )
    except ValueError:
        return False
    return hmac.compare_digest(found, _unb64(digest))


# Checked against when the user name is unknown, so a wrong name costs the same time.
_DUMMY = hash_password("not a password", log2_n=_LOG2_N)


class Credentials:
    """The users and tokens of the settings; ``check_*`` answer an Identity or None."""

    def __init__(self, settings: Settings) -> None:
        self._users: dict[str, tuple[Role, str]] = {}
        self._tokens: list[tuple[str, Role, str]] = []
        for entry in settings.console_users:
            name, role, stored = entry.get_secret_value().split(":", 2)
            self._users[name] = (parse_role(role), stored)
        for entry in settings.console_tokens:
            name, role, token = entry.get_secret_value().split(":", 2)
            self._tokens.append((name, parse_role(role), token))

    @property
    def configured(self) -> bool:
        return bool(self._users or self._tokens)

    def check_password(self, name: str, password: str) -> Identity | None:
        role, stored = self._users.get(name, ("read-only", _DUMMY))
        ok = check_password(password, stored)
        return Identity(name, role, "password") if ok and name in self._users else None

    def check_token(self, token: str) -> Identity | None:
        found = None
        for name, role, expected in self._tokens:  # every one compared: no early exit
            if hmac.compare_digest(token.encode(), expected.encode()):
                found = Identity(name, role, "token")
        return found

    def still_valid(self, who: Identity) -> bool:
        """A session ends when its user or token was removed from the settings or changed role."""
        if who.via == "password":
            found = self._users.get(who.name)
            return found is not None and found[0] == who.role
        return any(name == who.name and role == who.role for name, role, _ in self._tokens)


def parse_role(text: str) -> Role:
    for role in ROLES:
        if text == role:
            return role
    raise ValueError(f"unknown console role {text!r}")


def require_configured(settings: Settings) -> Credentials:
    """The console is off until someone may sign in: say what to set, and refuse to start."""
    credentials = Credentials(settings)
    if not credentials.configured:
        raise ConfigurationError(
            "the console has no users or tokens, so it stays off: set UPHOOKS_CONSOLE_USERS "
            "(name:role:hash, the hash from `uphooks console hash-password`) or "
            "UPHOOKS_CONSOLE_TOKENS (name:role:token, 32+ characters); role is operator or "
            "read-only (docs/console.md)"
        )
    return credentials
