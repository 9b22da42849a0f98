"""The Audit page: the newest actions, with who did them, from where, and what came of it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from console.guard import page
from console.sessions import Session
from console.state import Console


def _audit(con: Console, request: Request, session: Session) -> Response:
    return con.render(request, session, "audit.html", entries=con.audit.newest(200))


audit = page(_audit)
