"""A delivery as the console shows it: the body pretty-printed with e-mail addresses masked
(unless UPHOOKS_LOG_PERSONAL_DATA allows them), the kept headers with signatures hidden, and the
commands that post it again (``uphooks send --body -`` signs it with your secret)."""

from __future__ import annotations

import contextlib
import json
import re
import shlex

from handlers.log import mask_email

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# Kept headers are the sender's x-upload-post-* and webhook-*: no secret among them, but a
# signature is no business of a reader either.
_HIDDEN = ("signature", "token", "secret", "authorization", "cookie")


def masked(text: str, personal_data: bool) -> str:
    return text if personal_data else _EMAIL.sub(lambda m: mask_email(m.group(0)), text)


def pretty(body: bytes | None, personal_data: bool) -> str:
    if body is None:
        return ""
    text = body.decode("utf-8", errors="replace")
    with contextlib.suppress(ValueError):  # not JSON: shown as it came
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    return masked(text, personal_data)


def shown_headers(headers: dict[str, str]) -> list[tuple[str, str]]:
    return [
        (name, "(hidden)" if any(word in name.lower() for word in _HIDDEN) else value)
        for name, value in sorted(headers.items())
    ]


def send_command(body: bytes, url: str) -> str:
    text = shlex.quote(body.decode("utf-8", "replace"))
    return f"printf '%s' {text} | uphooks send --body - --url {shlex.quote(url)}"


def curl_command(body: bytes, url: str, event: str) -> str:
    return (
        f"curl -sS -X POST {shlex.quote(url)} -H 'Content-Type: application/json' "
        f"-H {shlex.quote('X-Upload-Post-Event: ' + event)} "
        f"--data-binary {shlex.quote(body.decode('utf-8', 'replace'))}"
    )
