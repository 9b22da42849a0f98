"""The environment a pipeline process runs with: settings as ``UPHOOKS_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping

from harness.procs import ROOT


def text(value: object) -> str:
    """A setting as its variable holds it (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def variables(settings: Mapping[str, object]) -> dict[str, str]:
    """``Settings`` field names and values as ``UPHOOKS_<NAME>`` variables."""
    return {f"UPHOOKS_{name.upper()}": text(value) for name, value in settings.items()}


def pipeline_env(
    redis_url: str,
    settings: Mapping[str, object] | None = None,
    extra: Mapping[str, str] | None = None,
    *,
    inherit_settings: bool = True,
) -> dict[str, str]:
    """This process's environment, plus: the code of this tree on ``PYTHONPATH``, Redis at
    ``redis_url`` (for the pipeline and for the Celery baselines), ``settings``, then ``extra``.

    ``inherit_settings=False`` drops the ``UPHOOKS_*`` variables this process was started with,
    so that nothing but what is given here shapes the run (the benchmarks)."""
    env = dict(os.environ)
    if not inherit_settings:
        env = {k: v for k, v in env.items() if not k.startswith("UPHOOKS_")}
    env.update(PYTHONPATH=str(ROOT), REDIS_URL=redis_url, UPHOOKS_REDIS_URL=redis_url)
    env.update(variables(settings or {}))
    env.update(extra or {})
    return env
