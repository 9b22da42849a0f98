"""Where a pool child's memory goes over a soak (``bench/soak.py --trace DIR``), bench only.

With ``BENCH_TRACEMALLOC_DIR`` set, each pool child (Celery's ``worker_process_init``) writes to
that directory every ``BENCH_TRACEMALLOC_EVERY`` seconds a JSON line (``<pid>.jsonl``): its RSS,
resident kB by mapping (``/proc/<pid>/smaps``), tracemalloc's total and peak, pymalloc's account
(arenas, blocks in use, the free lists, tuples by length), the GC's counters and its full
collections, the largest intake of the interval, and the count of each type among
``gc.get_objects()``; with tracemalloc on (``BENCH_TRACEMALLOC_FRAMES``, 12; 0: off, as its
hooks hide pymalloc's account), a snapshot too (``<pid>-<n>.snap``). ``BENCH_GC_GARBAGE=1`` adds
what a full collection finds unreachable, by type and allocation site (and collects it).
``BENCH_MALLOC_TRIM_EVERY`` is an A/B of glibc's retention (``malloc_trim`` every N seconds).

``python -m bench.memtrace DIR`` then compares, per process, the first sample after the warm-up
with the last: RSS beside tracemalloc's and pymalloc's totals (RSS growing while they stay flat
points at the allocator), the mappings, types and allocation sites that grew.
Imported by bench/noop_handler.py; without the variables it does nothing.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import os
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
from celery import signals

from harness import procfs

DIR_ENV = "BENCH_TRACEMALLOC_DIR"
EVERY_ENV = "BENCH_TRACEMALLOC_EVERY"
FRAMES_ENV = "BENCH_TRACEMALLOC_FRAMES"
TRIM_ENV = "BENCH_MALLOC_TRIM_EVERY"
GARBAGE_ENV = "BENCH_GC_GARBAGE"


def _types() -> dict[str, int]:
    counts = collections.Counter(str(type(o).__qualname__) for o in gc.get_objects())
    return dict(counts.most_common(200))


def _mappings(pid: int) -> dict[str, int]:
    """Resident kB by kind of mapping: the brk heap, anonymous maps by reserved size (glibc's
    per-thread arenas reserve 64 MB, pymalloc's arenas are 1 MB), files by name."""
    kinds: dict[str, int] = collections.Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):
            parts = line.split()
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            path = parts[5] if len(parts) > 5 else ""
            if path:
                name = path if path.startswith("[") else Path(path).name
            else:
                mb = (hi - lo) / 2**20
                size = "<1" if mb < 1 else "1-4" if mb <= 4 else "4-64" if mb <= 64 else ">64"
                name = f"anon {size} MB"
        elif first == "Rss:":
            kinds[name] += int(line.split()[1])
    return {k: v for k, v in kinds.items() if v}


def _pymalloc() -> dict[str, int]:
    """pymalloc's own account (``sys._debugmallocstats``, written on fd 2): arenas, and bytes
    in blocks in use against bytes free in its pools (free in Python, resident for the OS)."""
    wanted = {
        "# arenas allocated current": "arenas",
        "# arenas highwater mark": "arenas_highwater",
        "# bytes in allocated blocks": "in_use",
        "# bytes in available blocks": "free_blocks",
    }
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace")
    found: dict[str, int] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() in wanted:
            found[wanted[name.strip()]] = int(value.strip().replace(",", ""))
        elif " free " in line and "=" in line:  # a free list: bytes it holds, by object kind
            count, _, kind = line.split(" * ", 1)[0].strip().partition(" free ")
            if "PyTupleObjects" in kind:  # "2000 free 20-sized PyTupleObjects": by length
                found[f"free tuples of {kind.split('-', 1)[0]}"] = int(count)
                kind = "tuples"
            found[f"free list {kind}"] = found.get(f"free list {kind}", 0) + int(
                value.strip().replace(",", "")
            )
        elif "unused pools" in line:
            found["unused_pools"] = int(value.strip().replace(",", ""))
    return found


_full: list[dict[str, Any]] = []  # each full collection: traced memory before and after


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if info["generation"] != 2:
        return
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    if phase == "start":
        _full.append({"at": round(time.monotonic(), 1), "before": traced})
    elif _full:
        _full[-1].update(after=traced, collected=info["collected"])


_most = {"keys": 0}  # the most deliveries one message brought in, this interval


def _watch_batches() -> None:
    """Note the largest intake per interval (a transient peak that may raise pymalloc's)."""
    from workers.intake import Intaker

    take = Intaker.take

    def watched(self: Intaker, *args: Any, **kwargs: Any) -> Any:
        intake = take(self, *args, **kwargs)
        _most["keys"] = max(_most["keys"], len(intake.keys))
        return intake

    Intaker.take = watched  # type: ignore[method-assign]


def _garbage() -> dict[str, Any]:
    """What a full collection now finds unreachable (cycles), by type and by allocation site;
    then freed. Measures the cyclic garbage that piles up between the (rare) full collections."""
    before = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        found = gc.collect()
        kinds = collections.Counter(str(type(o).__qualname__) for o in gc.garbage)
        sites: collections.Counter[str] = collections.Counter()
        for o in gc.garbage:
            tb = tracemalloc.get_object_traceback(o)
            if tb is not None:
                sites[
                    " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}" for f in tb[:4])
                ] += 1
        gc.garbage.clear()
    finally:
        gc.set_debug(0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    return {
        "objects": found,
        "traced_freed": before - after,
        "types": dict(kinds.most_common(25)),
        "sites": dict(sites.most_common(15)),
    }


def _record(out: Path, every: float) -> None:
    pid = os.getpid()
    n = 0
    t0 = time.monotonic()
    while True:
        time.sleep(every)
        n += 1
        # Read before this thread's own work (snapshot, type census) allocates.
        rss_kb, (traced, peak), pymalloc = (
            procfs.rss_kb(pid),
            tracemalloc.get_traced_memory(),
            _pymalloc(),
        )
        garbage = _garbage() if os.environ.get(GARBAGE_ENV) else {}
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            snap.dump(str(out / f"{pid}-{n:04d}.snap"))
            del snap
        line = {
            "n": n,
            "t": round(time.monotonic() - t0, 1),
            "rss_kb": rss_kb,
            "traced": traced,
            "traced_peak": peak,
            "pymalloc": pymalloc,
            "most_keys": _most["keys"],
            "gc_counts": gc.get_count(),
            "gc_stats": gc.get_stats(),
            "full_collections": list(_full),
            "garbage": garbage,
            "threads": [t.name for t in threading.enumerate()],
            "maps": _mappings(pid),
            "types": _types(),
        }
        with (out / f"{pid}.jsonl").open("ab") as f:
            f.write(orjson.dumps(line) + b"\n")
        tracemalloc.reset_peak()  # the next line's peak is that interval's
        _most["keys"] = 0


def _trim_every(seconds: float) -> None:
    """The A/B of glibc's retention: give free heap pages back every ``seconds``."""
    libc = ctypes.CDLL("libc.so.6")
    while True:
        time.sleep(seconds)
        libc.malloc_trim(0)


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _start(**_: Any) -> None:
    trim = float(os.environ.get(TRIM_ENV) or 0)
    if trim:
        threading.Thread(target=_trim_every, args=(trim,), name="trim", daemon=True).start()
    where = os.environ.get(DIR_ENV)
    if not where:
        return
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    _watch_batches()
    gc.callbacks.append(_on_gc)
    frames = int(os.environ.get(FRAMES_ENV) or 12)
    if frames:  # 0: no tracemalloc, whose hooks also hide pymalloc's own account
        tracemalloc.start(frames)
    every = float(os.environ.get(EVERY_ENV) or 30)
    threading.Thread(target=_record, args=(out, every), name="memtrace", daemon=True).start()


# -- the diff ------------------------------------------------------------------------------


def _noise() -> list[tracemalloc.Filter]:
    return [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    ]


def diff(where: Path, skip: int, top: int, key: str) -> None:
    for series in sorted(where.glob("*.jsonl")):
        pid = series.stem
        rows = [orjson.loads(line) for line in series.read_bytes().splitlines()]
        if len(rows) <= skip + 1:
            continue
        first, last = rows[skip], rows[-1]
        print(
            f"\n== pid {pid}: samples {first['n']} (t={first['t']}) -> {last['n']} (t={last['t']})"
        )
        for r in rows:
            pym = r.get("pymalloc", {})
            print(
                f"  t={r['t']:>7} rss {r['rss_kb'] / 1024:7.2f} MB  traced {r['traced'] / 1e6:6.3f}"
                f" (peak {r.get('traced_peak', 0) / 1e6:6.3f}) MB  pymalloc: arenas"
                f" {pym.get('arenas', 0)} (most {pym.get('arenas_highwater', 0)}), in use"
                f" {pym.get('in_use', 0) / 1e6:6.2f} MB, free blocks"
                f" {pym.get('free_blocks', 0) / 1e6:5.2f} MB, unused pools"
                f" {pym.get('unused_pools', 0) / 1e6:5.2f} MB, free tuples"
                f" {pym.get('free list tuples', 0) / 1e3:5.0f} kB; full collections"
                f" {r['gc_stats'][2]['collections'] if 'gc_stats' in r else '?'};"
                f" batch <= {r.get('most_keys', '?')}"
            )
        print(f"  threads: {last.get('threads')}")
        maps = {
            k: last["maps"].get(k, 0) - first["maps"].get(k, 0)
            for k in set(first["maps"]) | set(last["maps"])
        }
        print("  resident kB that grew, by mapping:")
        for k, d in sorted(maps.items(), key=lambda kv: -abs(kv[1]))[:8]:
            if d:
                print(f"    {d:+7d} {k}")
        grown = {name: last["types"].get(name, 0) - count for name, count in first["types"].items()}
        grown |= {n: c for n, c in last["types"].items() if n not in first["types"]}
        print("  types that grew:")
        for name, d in sorted(grown.items(), key=lambda kv: -kv[1])[:15]:
            if d > 0:
                print(f"    {d:+7d} {name}")
        if not (where / f"{pid}-{first['n']:04d}.snap").exists():
            continue
        a = tracemalloc.Snapshot.load(str(where / f"{pid}-{first['n']:04d}.snap"))
        b = tracemalloc.Snapshot.load(str(where / f"{pid}-{last['n']:04d}.snap"))
        a, b = a.filter_traces(_noise()), b.filter_traces(_noise())
        print(f"  top allocation sites by growth ({key}):")
        for stat in b.compare_to(a, key)[:top]:
            print(f"    {stat.size_diff / 1024:+9.1f} kB {stat.count_diff:+7d}  ", end="")
            print("\n      ".join(stat.traceback.format(limit=8 if key == "traceback" else 1)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="diff the pool children's snapshots")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--skip", type=int, default=1, help="samples of warm-up to skip")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--key", default="lineno", choices=["lineno", "traceback", "filename"])
    args = parser.parse_args(argv)
    diff(args.dir, args.skip, args.top, args.key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
