"""What every console endpoint reaches through ``request.app.state.console``: made once, in
the app's lifespan (console/app.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from console.audit import Audit
from console.bulk import Jobs
from console.credentials import Credentials
from console.series import Series
from console.sessions import Session, Sessions
from console.store import ConsoleStore
from receiver.allowed_networks import AllowedNetworks
from uphooks.keys import Keys
from uphooks.settings import Settings
from workers.deadletter import DeadLetters


@dataclass
class Console:
    settings: Settings
    client: redis.Redis
    keys: Keys
    store: ConsoleStore
    credentials: Credentials
    sessions: Sessions
    audit: Audit
    templates: Jinja2Templates
    sources: AllowedNetworks
    jobs: Jobs
    dead_letters: DeadLetters
    series: Series

    def session(self, request: Request) -> Session | None:
        found = self.sessions.find(request)
        if found is None or not self.credentials.still_valid(found.who):
            return None
        return found

    def source(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        address = self.sources.client(peer, request.headers.getlist("x-forwarded-for"))
        return str(address) if address else "unknown"

    @staticmethod
    def url(request: Request, path: str) -> str:
        return str(request.scope.get("root_path", "")) + path

    def render(
        self,
        request: Request,
        session: Session | None,
        template: str,
        status_code: int = 200,
        **context: Any,
    ) -> Response:
        context |= {
            "who": session.who if session else None,
            "csrf": session.csrf if session else "",
            "root": str(request.scope.get("root_path", "")),
        }
        return self.templates.TemplateResponse(request, template, context, status_code=status_code)


def console_of(request: Request) -> Console:
    con: Console = request.app.state.console
    return con
