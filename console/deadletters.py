"""The Dead letters page: the filtered list, the estimate before a bulk replay, its progress."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from console import filters
from console.events import MESSAGES
from console.guard import page
from console.sessions import Session
from console.state import Console


def _dead_letters(con: Console, request: Request, session: Session) -> Response:
    chosen = filters.read(request.query_params).with_state("dead")
    result = con.store.dead_letters(chosen.query)
    job_id = request.query_params.get("job", "")
    jobs = con.jobs.newest(5)
    if job_id and all(j.id != job_id for j in jobs):
        found = con.jobs.get(job_id)
        jobs = [found, *jobs] if found else jobs
    return con.render(
        request,
        session,
        "dead_letters.html",
        page=result,
        f=chosen,
        jobs=jobs,
        estimate=None,
        message=MESSAGES.get(request.query_params.get("msg", "")),
    )


def _estimate(con: Console, request: Request, session: Session) -> Response:
    chosen = filters.read(request.query_params).with_state("dead")
    return con.render(
        request,
        session,
        "estimate.html",
        f=chosen,
        estimate=con.store.estimate_detail(chosen.query),
        chunk=con.settings.console_bulk_chunk,
    )


def _job(con: Console, request: Request, session: Session) -> Response:
    job = con.jobs.get(request.path_params["job_id"])
    if job is None:
        return JSONResponse({"error": "no such job"}, status_code=404)
    data = asdict(job) | {"percent": job.percent}
    data.pop("query")
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


dead_letters = page(_dead_letters)
estimate = page(_estimate)
job = page(_job)
