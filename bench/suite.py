"""``make bench``: every benchmark module in one bounded run (``--budget``, 570 s by default).

Each section is one module, run as ``python -m bench.<module>`` with settings that fit the
budget, one after another (they would disturb each other's figures side by side). A module that
is not in this tree is named as missing; a section that would not fit in what is left of the
budget is skipped and named; a section past its own time is stopped. Each module prints its own
tables and writes its own JSON in bench/results/; this prints what ran, for how long, and how it
ended.

Sections (issue 14's goals in brackets):

- ``run``: the ingress beside its baselines and the durable floor M, ``uphooks serve`` with one
  and two processes [5], and workers draining backlogs as the ingress batches them, beside bare
  Celery;
- ``worker_patterns``: workers at 1, 4, 16 and 64 concurrent senders, and latency from the 202
  to the handler's start beside bare Celery and bare Celery with one claim [1, 4];
- ``async_handlers``: async handlers against bare Celery prefork at the same RSS, sync ones
  against ``-P threads`` [2] (the async-rate lane);
- ``console``: the console's pages with 100,000 retained deliveries (the console-data lane;
  ``make bench-console`` for 1,000,000);
- ``refusals``: the CPU cost of refused requests beside a valid one;
- ``replicas``: what ``UPHOOKS_ACK_REPLICAS=1, 2`` cost against 0.

Memory over 10 minutes [6] is ``make bench-soak`` (bench/soak.py), on its own.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from harness.procs import ROOT


@dataclass(frozen=True)
class Section:
    module: str
    args: tuple[str, ...]
    #: What it takes on the 2-core machine of docs/performance.md, in seconds: the budget check.
    expected: float
    what: str


SECTIONS = (
    Section(
        "run",
        (
            *("--duration", "5", "--rounds", "3", "--pools", "prefork -c2"),
            *("--events", "4000", "--events-batch1", "1000"),
        ),
        240,
        "ingress and workers beside their baselines",
    ),
    Section("worker_patterns", ("--events", "1000"), 190, "workers by arrival pattern, latency"),
    Section("async_handlers", (), 90, "async handlers vs prefork, sync vs -P threads"),
    Section("console", ("--n", "100000", "--repeat", "20"), 60, "console pages, 100k retained"),
    Section("refusals", ("--small", "1000", "--large", "80"), 40, "refused requests' CPU"),
    Section("replicas", ("--rounds", "1", "--duration", "3"), 40, "UPHOOKS_ACK_REPLICAS cost"),
)


def present(module: str) -> bool:
    return importlib.util.find_spec(f"bench.{module}") is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=570, help="seconds for the whole run")
    parser.add_argument("--only", default="", help="sections to run, e.g. run,worker_patterns")
    args = parser.parse_args(argv)
    chosen = [s for s in SECTIONS if not args.only or s.module in args.only.split(",")]
    start = time.monotonic()
    done: list[tuple[str, str]] = []
    print(f"# load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for section in chosen:
        left = args.budget - (time.monotonic() - start)
        if not present(section.module):
            done.append((section.module, "missing: not in this tree"))
            continue
        if section.expected > left:
            done.append(
                (section.module, f"skipped: {left:.0f} s left, takes ~{section.expected:.0f}")
            )
            continue
        print(f"\n== bench.{section.module}: {section.what}", flush=True)
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", f"bench.{section.module}", *section.args]
        proc = subprocess.Popen(cmd, cwd=ROOT)
        try:
            code = proc.wait(left)
            outcome = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            # SIGINT, not SIGTERM: its `finally` blocks stop the processes it started.
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            outcome = f"stopped after {left:.0f} s (the budget)"
        done.append((section.module, f"{outcome} in {time.monotonic() - t0:.0f} s"))
    print(f"\n# bench: {time.monotonic() - start:.0f} s of {args.budget:.0f}")
    print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for module, outcome in done:
        print(f"  bench.{module:<16} {outcome}")
    return 0 if all(o.startswith(("ok", "missing")) for _, o in done) else 1


if __name__ == "__main__":
    sys.exit(main())
