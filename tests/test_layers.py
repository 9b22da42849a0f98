"""Imports point one way: the shared floor (``uphooks/``) imports none of the processes; the
ingress, the workers and the handlers import no operator tooling; a handler imports neither
the workers nor the ingress. Read from the source (every import, lazy ones included), so a
new import that points back up fails here before it is merged."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

# Above everything: the CLI, the console, and what only tests and measurements use.
TOOLING = ("uphooks_cli", "console", "tests", "chaos", "bench", "harness")

# For each package, the packages it must not import.
FORBIDDEN = {
    "uphooks": ("receiver", "workers", "handlers", *TOOLING),
    "receiver": ("workers", "handlers", *TOOLING),
    "workers": ("receiver", *TOOLING),
    "handlers": ("workers", "receiver", *TOOLING),
}
# The reconciliation job runs in the workers and injects what it finds through the ingress's
# own store-and-enqueue path (uphooks/reconcile.py takes it as an argument).
ALLOWED = {"workers": ("receiver.inject",)}


def imported(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Every absolute module name an AST imports, with its line."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module


def breaches(package: str, source: str, where: str) -> list[str]:
    found = []
    for line, name in imported(ast.parse(source)):
        top = name.split(".")[0]
        if top not in FORBIDDEN[package]:
            continue
        if name in ALLOWED.get(package, ()):
            continue
        found.append(f"{where}:{line} imports {name}")
    return sorted(set(found))


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_every_package_has_modules_to_check() -> None:
    for package in FORBIDDEN:
        assert len(modules(package)) >= 5, package


def test_nothing_below_the_tooling_imports_upwards() -> None:
    found = []
    for package in FORBIDDEN:
        for path in modules(package):
            rel = path.relative_to(ROOT)
            found += breaches(package, path.read_text(), str(rel))
    assert not found, "imports that point back up the house:\n" + "\n".join(found)


def test_the_check_catches_an_upward_import_even_a_lazy_one() -> None:
    lazy = "def f():\n    from uphooks_cli.eventlog import EventLog\n    return EventLog\n"
    assert breaches("workers", lazy, "w.py") == ["w.py:2 imports uphooks_cli.eventlog"]
    assert breaches("handlers", "from workers import ledger\n", "h.py") == [
        "h.py:1 imports workers"
    ]
    assert breaches("uphooks", "import receiver.inject\n", "u.py") == [
        "u.py:1 imports receiver.inject"
    ]
    # The one allowed crossing, and only that one.
    assert breaches("workers", "from receiver.inject import inject\n", "w.py") == []
    assert breaches("workers", "from receiver.enqueue import Enqueuer\n", "w.py") == [
        "w.py:1 imports receiver.enqueue"
    ]
