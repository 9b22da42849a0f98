"""Real processes for the tests, the chaos scenarios and the benchmarks: one harness for all three.

- ``harness.redis``: a Redis server of our own on a free port (the embedded one ``uphooks dev``
  uses), emptied and compacted between runs.
- ``harness.procs``: start a process in its own session with its output in a log file; stop it
  (SIGTERM to the main process, so a Celery worker stops its pool itself) or kill its whole group.
- ``harness.procfs``: what ``/proc`` says about a process: RSS, CPU time, children.
- ``harness.env``: the environment a pipeline process runs with (``UPHOOKS_*`` from settings).
- ``harness.commands``: the command lines of the ingress (``uphooks serve``, or a uvicorn app)
  and of a worker (``uphooks worker``).
- ``harness.machine``: what a run ran on (CPU model, Redis server version), for reports.
- ``harness.wait``: waiting, bounded: for a predicate, an HTTP listener, a log line.

Not installed with the package (a development tool, like ``tests/``, ``chaos/`` and ``bench/``).
"""
