"""What an operator can do: replay, erase a payload, bulk replay, cancel, purge.

Each is a POST through ``guard.action`` (operator role, CSRF token, same origin) and is
audited with who did it. They answer with a redirect to the page they came from (POST,
redirect, GET), with a short message code.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from console import filters
from console.guard import action
from console.sessions import Session
from console.state import Console
from workers.deadletter import entry_id


def _back_to_event(con: Console, request: Request, key: str, msg: str) -> Response:
    path = f"/events/{quote(key, safe='')}?msg={msg}"
    return RedirectResponse(con.url(request, path), status_code=303)


def _audit(
    con: Console, request: Request, session: Session, what: str, outcome: str, **detail: object
) -> None:
    con.audit.record(
        session.who.name, session.who.role, con.source(request), what, outcome, **detail
    )


def _replay_one(con: Console, request: Request, session: Session, form: FormData) -> Response:
    key = request.path_params["key"]
    handler = str(form.get("handler") or "")
    result = con.jobs.replay_pair(key, handler)
    _audit(con, request, session, "replay", result, key=key, handler=handler)
    return _back_to_event(con, request, key, result)


def _replay_failed(con: Console, request: Request, session: Session, form: FormData) -> Response:
    key = request.path_params["key"]
    pairs = con.jobs.dead_pairs(key)
    results = [con.jobs.replay_pair(k, h) for k, h in pairs]
    _audit(
        con,
        request,
        session,
        "replay-failed",
        f"{results.count('replayed')} replayed",
        key=key,
        handlers=[h for _, h in pairs],
    )
    return _back_to_event(
        con, request, key, "replayed" if "replayed" in results else "replayed-none"
    )


def _erase(con: Console, request: Request, session: Session, form: FormData) -> Response:
    key = request.path_params["key"]
    erased = con.store.erase_payload(key, session.who.name)
    _audit(con, request, session, "erase-payload", "ok" if erased else "nothing", key=key)
    return _back_to_event(con, request, key, "erased" if erased else "erase-none")


def _bulk_start(con: Console, request: Request, session: Session, form: FormData) -> Response:
    chosen = filters.read(form).with_state("dead")
    total = con.store.estimate(chosen.query)
    job = con.jobs.start(session.who.name, chosen.qs(), chosen.query, total)
    _audit(
        con,
        request,
        session,
        "bulk-replay",
        "started",
        job=job.id,
        filters=chosen.given,
        estimate=total,
    )
    return RedirectResponse(con.url(request, f"/dead-letters?{chosen.qs()}&job={job.id}"), 303)


def _bulk_cancel(con: Console, request: Request, session: Session, form: FormData) -> Response:
    job_id = request.path_params["job_id"]
    asked = con.jobs.cancel(job_id)
    _audit(con, request, session, "bulk-cancel", "ok" if asked else "not running", job=job_id)
    job = con.jobs.get(job_id)
    qs = job.filters if job else ""
    return RedirectResponse(con.url(request, f"/dead-letters?{qs}&job={job_id}&msg=cancelled"), 303)


def _purge(con: Console, request: Request, session: Session, form: FormData) -> Response:
    """Delete dead letters for good: one (``entry``), or every one the filters select."""
    entry = str(form.get("entry") or "")
    chosen = filters.read(form).with_state("dead")
    removed = 0
    if entry:
        con.dead_letters.remove(entry)
        removed = 1
    else:
        for chunk in con.store.iter_keys(chosen.query, batch=con.settings.console_bulk_chunk):
            for item in chunk:
                for key, handler in con.jobs.pairs_of(item, chosen.query.handler):
                    con.dead_letters.remove(entry_id(key, handler))
                    removed += 1
    _audit(con, request, session, "purge", f"{removed} removed", entry=entry, filters=chosen.given)
    return RedirectResponse(con.url(request, f"/dead-letters?{chosen.qs()}&msg=purged"), 303)


replay_one = action(_replay_one)
replay_failed = action(_replay_failed)
erase = action(_erase)
bulk_start = action(_bulk_start)
bulk_cancel = action(_bulk_cancel)
purge = action(_purge)
