"""The root ``uphooks`` group: every command module loads, is listed, and is loaded only when
its command runs."""

from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from tests.conftest import ROOT
from uphooks_cli.main import COMMANDS, main


def test_help_lists_every_command_and_each_one_has_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    listed = result.output.split("Commands:", 1)[1].split()
    assert set(COMMANDS) <= set(listed)
    for name in COMMANDS:
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0, (name, sub.output)
        assert f"Usage: main {name}" in sub.output


def test_a_command_loads_its_own_module_only() -> None:
    script = (
        "import sys\n"
        "from uphooks_cli.main import main\n"
        "main(['handlers', '--json'], standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('uphooks_cli.', 'uvicorn', "
        "'celery')))\n"
        "print(' '.join(loaded), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stderr.split()
    assert "uphooks_cli.handlers" in loaded
    assert not [m for m in loaded if m.startswith(("uphooks_cli.serve", "uvicorn", "celery"))]
    assert "uphooks_cli.send" not in loaded
