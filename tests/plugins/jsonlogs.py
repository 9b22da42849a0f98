"""Applies the worker's log set-up from a plugin (imported in the main process before the pool
forks), as ``workers/tasks.py`` will at Celery's ``setup_logging``."""

from __future__ import annotations

from uphooks import logs
from uphooks.settings import get_settings

logs.configure(get_settings(), "worker")
