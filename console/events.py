"""The Events pages: the live list with filters, lookup, and one event with every attempt."""

from __future__ import annotations

import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from console import body, filters
from console.guard import page
from console.sessions import Session
from console.state import Console
from console.store import STATES

# What an action tells the page it redirects to (codes, so a link cannot put words on it).
MESSAGES = {
    "replayed": "Replayed: the handler runs again shortly.",
    "replayed-none": "Nothing to replay: no dead handler.",
    "done": "Not replayed: the handler was done meanwhile.",
    "busy": "Not replayed: the handler is already under way.",
    "gone": "Not replayed: the delivery is gone.",
    "erased": "The payload was erased; the outcomes are kept.",
    "erase-none": "Nothing erased: no payload kept.",
    "purged": "Purged.",
    "cancelled": "Cancel asked: the job stops after its current chunk.",
}


def _events(con: Console, request: Request, session: Session) -> Response:
    chosen = filters.read(request.query_params)
    result = con.store.list_events(chosen.query)
    return con.render(
        request,
        session,
        "events.html",
        page=result,
        counts=con.store.counts(),
        f=chosen,
        states=STATES,
        live=chosen.query.cursor is None,
        now=time.time(),
    )


def _rows(con: Console, request: Request, session: Session) -> Response:
    """New rows since ``after`` (receipt time), for the live list; newest first."""
    chosen = filters.read(request.query_params)
    try:
        after = float(request.query_params.get("after", "0"))
    except ValueError:
        after = 0.0
    rows = con.store.newest_since(after, chosen.query)
    html = con.templates.get_template("_rows.html").render(
        rows=rows, root=con.url(request, ""), quote=quote
    )
    newest = max([after, *(r.received_at for r in rows)])
    return HTMLResponse(html, headers={"X-Newest": f"{newest:.6f}", "Cache-Control": "no-store"})


def _lookup(con: Console, request: Request, session: Session) -> Response:
    term = request.query_params.get("term", "").strip()[:300]
    keys = con.store.lookup(term) if term else []
    if len(keys) == 1:
        return RedirectResponse(con.url(request, "/events/" + quote(keys[0], safe="")), 303)
    return con.render(request, session, "lookup.html", term=term, keys=keys)


def webhook_url(con: Console) -> str:
    s = con.settings
    return (s.public_url or "http://127.0.0.1:8000") + s.webhook_path


def _event(con: Console, request: Request, session: Session) -> Response:
    key = request.path_params["key"]
    detail = con.store.event(key)
    if detail is None:
        return con.render(request, session, "missing.html", 404, key=key)
    personal = con.settings.log_personal_data
    raw = body.masked(detail.body.decode("utf-8", "replace"), personal) if detail.body else ""
    url = webhook_url(con)
    return con.render(
        request,
        session,
        "event.html",
        e=detail,
        body=body.pretty(detail.body, personal),
        headers=body.shown_headers(detail.headers),
        send=body.send_command(raw.encode(), url) if raw else "",
        curl=body.curl_command(raw.encode(), url, detail.event) if raw else "",
        masked=not personal,
        failed=[h.handler for h in detail.handlers if h.state == "dead"],
        message=MESSAGES.get(request.query_params.get("msg", "")),
    )


events = page(_events)
rows = page(_rows)
lookup = page(_lookup)
event = page(_event)
