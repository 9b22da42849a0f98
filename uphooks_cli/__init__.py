"""Operator tooling above the pipeline: the ``uphooks`` command (``main.py`` and one module per
command group) and what only it uses: the delivery simulator, the event log reader, the
development stack with its embedded Redis, reconciliation's watch and drift.

Nothing in ``uphooks/``, ``receiver/``, ``workers/`` or ``handlers/`` imports this package
(``tests/test_layers.py``).
"""
