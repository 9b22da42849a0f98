"""``python -m uphooks_cli``: the ``uphooks`` command."""

from uphooks_cli.main import main

main(prog_name="uphooks")
