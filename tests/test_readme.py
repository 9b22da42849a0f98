"""The README's handler example works when a newcomer saves it at the repository root: ruff (as
`make test` runs it) passes, and a worker would load both handlers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


def readme_handler_module() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```python\n(# myhooks\.py\n.*?)```", readme, re.S)
    assert found, "the README's handler example (# myhooks.py) is gone"
    return found.group(1)


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
@pytest.mark.parametrize("check", [["check"], ["format", "--check"]])
def test_the_readme_handler_passes_ruff_when_saved_at_the_root(check: list[str]) -> None:
    result = subprocess.run(
        [str(RUFF), *check, "--stdin-filename", str(ROOT / "myhooks.py"), "-"],
        input=readme_handler_module(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_handler_loads_as_a_handler_module(tmp_path: Path) -> None:
    (tmp_path / "myhooks.py").write_text(readme_handler_module(), encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT), UPHOOKS_HANDLER_MODULES="myhooks")
    result = subprocess.run(
        [sys.executable, "-m", "uphooks_cli", "handlers", "--json"],
        cwd=tmp_path,  # as `uphooks worker` does, the current folder is importable
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {row["name"] for row in json.loads(result.stdout)}
    assert {"myhooks.tell_the_team", "myhooks.audit"} <= names
