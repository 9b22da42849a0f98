"""constraints.txt, the lock: every dependency pinned within pyproject's bounds; installs use it."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

LOCK = ROOT / "constraints.txt"


def pins() -> dict[str, tuple[str, Requirement]]:
    found: dict[str, tuple[str, Requirement]] = {}
    for line in LOCK.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"not an exact pin: {line}"
            found[canonicalize_name(req.name)] = (spec.version, req)
    return found


def test_every_dependency_is_pinned_within_the_bounds_pyproject_sets() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in ("dev", "embedded", "sql", "postgres"):
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    locked = pins()
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in constraints.txt: run `make lock`"
        version, pin = locked[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {req.name}=={version}, outside pyproject's {req}: "
            "run `make lock`, then the tests"
        )
        # A package pyproject wants only on some Pythons carries the same marker in the lock.
        assert str(req.marker or "") == str(pin.marker or ""), req


def test_the_makefile_and_the_image_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -c constraints.txt -e '.[dev]'" in makefile
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "pip install --no-cache-dir -c constraints.txt " in dockerfile
    assert "constraints.txt ./" in dockerfile  # copied into the build stage
    ignore = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    assert "!constraints.txt" in ignore
