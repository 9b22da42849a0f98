"""``python -m chaos [--quick] [--only 1,2] [--json PATH]``: run the scenarios, print the table.

``--quick`` runs every scenario with small counts and short phases (about 4 minutes).

Exits 1 if any acknowledged event was lost or took effect twice, or a scenario's own check
failed; 2 if the harness itself broke.
"""

from __future__ import annotations

import signal
import sys
import time
import traceback
from pathlib import Path

import click

from chaos.machine import describe
from chaos.report import HEADER, Row, details, markdown, table_line, write_json
from chaos.scenarios import SCENARIOS
from chaos.scenarios.base import Ctx
from chaos.stack import TIMINGS


@click.command()
@click.option("--quick", is_flag=True, help="small counts and short phases (development)")
@click.option("--only", default="", help="comma-separated scenario ids, e.g. 0,2,8a")
@click.option("--out", default="var/chaos", show_default=True, type=click.Path())
@click.option("--json", "json_path", default=None, help="JSON report (default: <out>/report.json)")
@click.option("--rate", default=0.0, type=float, help="skip scenario 0: use this max events/s")
@click.option(
    "--budget",
    default=1200.0,
    show_default=True,
    help="seconds; a scenario that would start after this is reported as not run (a failure)",
)
def main(
    quick: bool, only: str, out: str, json_path: str | None, rate: float, budget: float
) -> None:
    # A TERM (e.g. from `timeout`) unwinds like Ctrl-C, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise click.UsageError(f"unknown scenario(s) {sorted(unknown)}; known: {list(SCENARIOS)}")
    run_dir = Path(out) / time.strftime("run-%Y%m%d-%H%M%S")
    ctx = Ctx(out=run_dir.resolve(), quick=quick, max_rate=rate)
    ids = [sid for sid in SCENARIOS if not chosen or sid in chosen]
    if not ctx.max_rate and "0" not in ids:
        ids.insert(0, "0")  # the others need the measured maximum
    started = time.time()
    click.echo(f"chaos run in {run_dir} ({'quick' if quick else 'full'}): scenarios {ids}")
    click.echo(HEADER)
    rows: list[Row] = []
    broken = False
    for sid in ids:
        scenario = SCENARIOS[sid]
        if time.time() - started > budget:
            row = Row(sid, f"{scenario.__name__}: not run")
            row.check("ran within the time budget", False, f"{budget:.0f}s used up")
            rows.append(row)
            click.echo(table_line(row))
            continue
        t_scenario = time.time()
        try:
            row = scenario(ctx)
        except Exception as exc:
            broken = True
            row = Row(sid, f"{scenario.__name__}: harness error")
            row.check("scenario ran to the end", False, repr(exc))
            row.evidence.append(traceback.format_exc(limit=5))
        row.seconds = round(time.time() - t_scenario, 1)
        rows.append(row)
        click.echo(table_line(row))
        for line in details(row):
            click.echo(line)
    meta = {
        "machine": describe(),
        "timings": TIMINGS,
        "quick": quick,
        "seconds": round(time.time() - started, 1),
        "run_dir": str(run_dir),
    }
    target = json_path or str(Path(out) / "report.json")
    write_json(target, rows, meta)
    Path(target).with_suffix(".md").write_text(markdown(rows), encoding="utf-8")
    click.echo(f"{len(rows)} scenario(s) in {meta['seconds']}s; JSON: {target}")
    if broken:
        sys.exit(2)
    if not all(r.ok for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
