"""A tool from a Debian package, unpacked under var/ for the tests (nothing installed)."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import ROOT


def unpack(package: str, binary: str) -> Path | str:
    """``binary`` (a path inside ``package``, e.g. ``usr/sbin/nginx``) from Debian's package,
    unpacked under var/<package>-deb; or, when it cannot be had, why."""
    folder = ROOT / "var" / f"{package}-deb"
    path = folder / binary
    if path.exists():
        return path
    if not (shutil.which("apt-get") and shutil.which("dpkg")):
        return f"no apt-get/dpkg to fetch Debian's {package}"
    folder.mkdir(parents=True, exist_ok=True)
    # The suite runs in several processes: one unpacks, the others wait and find it there.
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return path if path.exists() else _fetch(package, folder, path, binary)


def _fetch(package: str, folder: Path, path: Path, binary: str) -> Path | str:
    download = ["apt-get", "download", package]
    got = subprocess.run(download, cwd=folder, capture_output=True, text=True, check=False)
    if got.returncode != 0 and os.geteuid() == 0:  # stale package lists: refresh, try again
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
        got = subprocess.run(download, cwd=folder, capture_output=True, text=True, check=False)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if got.returncode != 0 or not debs:
        return f"`apt-get download {package}` failed: {got.stderr.strip()[-300:]}"
    subprocess.run(["dpkg", "-x", str(debs[-1]), str(folder)], check=True)
    return path if path.exists() else f"the {package} package held no {binary}"
