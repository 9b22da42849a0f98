"""The Handlers page: what ``uphooks handlers`` shows, and which live workers run each one."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from console.guard import page
from console.sessions import Session
from console.state import Console
from uphooks.errors import ConfigurationError
from uphooks.liveness import workers_seen
from workers.plugins import describe, load_handlers


def _handlers(con: Console, request: Request, session: Session) -> Response:
    problem = None
    rows = []
    try:
        loaded = load_handlers(con.settings)
        rows = [describe(spec, con.settings, loaded.sources[spec.name]) for spec in loaded.router]
    except ConfigurationError as exc:
        problem = f"a worker with this console's settings would not start: {exc}"
    seen = workers_seen(con.client, con.keys, con.settings.heartbeat_stale_seconds)
    run_by: dict[str, list[str]] = {}
    for node, info in seen.info:
        for name in info.handlers:
            run_by.setdefault(name, []).append(node)
    known = {row["name"] for row in rows}
    return con.render(
        request,
        session,
        "handlers.html",
        rows=rows,
        run_by=run_by,
        only_on_workers=sorted(set(run_by) - known),
        problem=problem,
    )


handlers = page(_handlers)
