"""Sign in (a user's password or a token) and sign out."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console.guard import action, refused, same_origin
from console.sessions import Session
from console.state import Console, console_of


def login_form(request: Request) -> Response:
    con = console_of(request)
    if con.session(request) is not None:
        return RedirectResponse(con.url(request, "/events"), status_code=303)
    return con.render(request, None, "login.html", error=None)


async def login(request: Request) -> Response:
    con = console_of(request)
    if not same_origin(request, con.settings.console_public_url):
        return await run_in_threadpool(refused, con, request, None, "foreign origin")
    form = await request.form(max_files=0, max_fields=10)
    return await run_in_threadpool(_login, con, request, form)


def _login(con: Console, request: Request, form: FormData) -> Response:
    source = con.source(request)
    token = str(form.get("token") or "")
    name = None if token else str(form.get("name") or "")[:100]
    shown = name if name is not None else "(token)"
    if con.sessions.locked_out(name, source):
        con.audit.record(shown, "-", source, "sign-in", "refused", why="too many failures")
        return con.render(
            request, None, "login.html", 429, error="Too many failed sign-ins: wait 15 minutes."
        )
    if name is None:
        who = con.credentials.check_token(token[:500])
    else:
        who = con.credentials.check_password(name, str(form.get("password") or "")[:500])
    if who is None:
        con.sessions.failed(name, source)
        con.audit.record(shown, "-", source, "sign-in", "refused", why="wrong credentials")
        return con.render(request, None, "login.html", 401, error="Wrong name, password or token.")
    response = RedirectResponse(con.url(request, "/events"), status_code=303)
    con.sessions.start(who, response)
    con.audit.record(who.name, who.role, source, "sign-in", "ok", via=who.via)
    return response


def _logout(con: Console, request: Request, session: Session, form: FormData) -> Response:
    response = RedirectResponse(con.url(request, "/login"), status_code=303)
    con.sessions.end(request, response)
    con.audit.record(session.who.name, session.who.role, con.source(request), "sign-out", "ok")
    return response


logout = action(_logout, operator=False)
