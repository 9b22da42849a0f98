"""Load against one server: wrk with bench/wrk.lua (bench/loadgen.py when wrk is missing)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.common import PATH
from harness.procs import ROOT

LUA = ROOT / "bench" / "wrk.lua"


@dataclass
class Load:
    requests: int
    seconds: float
    statuses: dict[str, int]
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    acked_keys: list[str] = field(repr=False, default_factory=list)
    generator: str = "wrk"
    wrapped: int = 0

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if s.startswith("2"))

    @property
    def ok_per_s(self) -> float:
        return self.ok / self.seconds


def run_load(
    url: str, requests_file: Path, seconds: float, connections: int, threads: int, workdir: Path
) -> Load:
    keys_file = workdir / "acked-keys.txt"
    keys_file.unlink(missing_ok=True)
    if shutil.which("wrk"):
        cmd = ["wrk", "-t", str(threads), "-c", str(connections)]
        cmd += ["-d", f"{max(1, round(seconds))}s"]
        cmd += ["--timeout", "10s", "-s", str(LUA), url + PATH, "--", str(requests_file)]
        cmd += [str(threads)]
        generator = "wrk"
    else:
        cmd = [sys.executable, "-m", "bench.loadgen", url, str(requests_file)]
        cmd += [str(connections), str(seconds)]
        generator = "python fallback (bench/loadgen.py): limited by the generator, not comparable"
    env = dict(os.environ, BENCH_KEYS_FILE=str(keys_file), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + 120, check=False
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"load generator failed: {done.stdout}\n{done.stderr}")
    data = orjson.loads(line[len("WRKJSON ") :])
    keys = keys_file.read_text().split() if keys_file.exists() else []
    return Load(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        statuses={str(k): v for k, v in data["statuses"].items()},
        errors=data["errors"],
        p50_ms=data["latency_us"]["p50"] / 1000,
        p99_ms=data["latency_us"]["p99"] / 1000,
        acked_keys=keys,
        generator=generator,
        wrapped=data.get("wrapped", 0),
    )
