"""Who may see a page and who may act: sign-in, role, CSRF token and Origin, in one place.

A page needs a session (else the sign-in page). An action (every POST but sign-in) needs a
session, the operator role, the session's CSRF token in the form, and an ``Origin`` (or, when a
browser sends none, ``Referer``) that is the console's own: UPHOOKS_CONSOLE_PUBLIC_URL's origin
behind a proxy, else the request's ``Host``. Anything else is answered 403 and audited.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

from console.sessions import Session
from console.state import Console, console_of

Action = Callable[[Console, Request, Session, FormData], Response]
Page = Callable[[Console, Request, Session], Response]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def same_origin(request: Request, public_url: str | None) -> bool:
    sent = request.headers.get("origin") or ""
    if not sent or sent == "null":
        referer = request.headers.get("referer")
        sent = origin_of(referer) if referer else ""
    if not sent:
        return False
    if public_url:
        return sent.lower() == origin_of(public_url)
    return urlsplit(sent).netloc.lower() == request.headers.get("host", "").lower()


def refused(con: Console, request: Request, who: Session | None, why: str) -> Response:
    name, role = (who.who.name, who.who.role) if who else ("-", "-")
    con.audit.record(name, role, con.source(request), request.url.path, "refused", why=why)
    return PlainTextResponse(f"refused: {why}", status_code=403)


def page(func: Page) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        con = console_of(request)

        def run() -> Response:
            session = con.session(request)
            if session is None:
                return RedirectResponse(con.url(request, "/login"), status_code=303)
            return func(con, request, session)

        return await run_in_threadpool(run)

    return endpoint


def action(func: Action, *, operator: bool = True) -> Callable[[Request], Awaitable[Response]]:
    """A POST endpoint; ``operator=False`` for what any signed-in role may do (sign out)."""

    async def endpoint(request: Request) -> Response:
        con = console_of(request)
        session = await run_in_threadpool(con.session, request)
        if session is None:
            return await run_in_threadpool(refused, con, request, None, "not signed in")
        if not same_origin(request, con.settings.console_public_url):
            return await run_in_threadpool(refused, con, request, session, "foreign origin")
        form = await request.form(max_files=0, max_fields=200)
        token = form.get("csrf")
        if not isinstance(token, str) or not hmac.compare_digest(token, session.csrf):
            return await run_in_threadpool(refused, con, request, session, "bad CSRF token")
        if operator and not session.who.can_act:
            return await run_in_threadpool(refused, con, request, session, "read-only role")
        return await run_in_threadpool(func, con, request, session, form)

    return endpoint
