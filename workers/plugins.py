"""Which handler modules the worker loads, and the one router built from them.

Sources, in order: the built-in handlers the settings enable (``log`` unless disabled;
``telegram``, ``forward``, ``sql`` when ``UPHOOKS_<NAME>_ENABLED``), the modules named in
``UPHOOKS_HANDLER_MODULES``, and every entry point in the group ``uphooks.handlers`` (each names a
module, or a ``Router`` object). A module registers with ``@on`` (the default router), exposes a
``router``, or defines ``build_router(settings)`` when its handlers depend on settings.

Anything that fails to import or to build stops the worker: a silently missing handler is lost
work. So does a handler option the settings make impossible (a time limit the task's soft limit
would cut first).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from handlers.registry import ANY_EVENT, FILTERS_BY_EVENT, HandlerSpec, Router, default_router
from uphooks.errors import ConfigurationError
from uphooks.settings import Settings

ENTRY_POINT_GROUP = "uphooks.handlers"

log = logging.getLogger("uphooks.worker")


def _own_settings_enable(module: str) -> Callable[[Settings], bool]:
    """A built-in plugin with its own settings class says itself whether they enable it."""
    return lambda _: bool(importlib.import_module(module).enabled())


#: Built-in handler modules: name -> (module, is it enabled, the setting that enables it).
BUILTINS: dict[str, tuple[str, Callable[[Settings], bool], str]] = {
    "log": ("handlers.log", lambda s: s.builtin_log_handler, "UPHOOKS_BUILTIN_LOG_HANDLER"),
    "telegram": (
        "handlers.telegram",
        _own_settings_enable("handlers.telegram"),
        "UPHOOKS_TELEGRAM_ENABLED",
    ),
    "forward": (
        "handlers.forward",
        _own_settings_enable("handlers.forward"),
        "UPHOOKS_FORWARD_ENABLED",
    ),
    # handlers/sql.py needs SQLAlchemy to import: its settings live apart.
    "sql": ("handlers.sql", _own_settings_enable("handlers.sql_settings"), "UPHOOKS_SQL_ENABLED"),
    "upload_post_retry": (
        "handlers.upload_post_retry",
        _own_settings_enable("handlers.upload_post_retry"),
        "UPHOOKS_UPLOAD_POST_RETRY_ENABLED",
    ),
}


@dataclass(frozen=True)
class Loaded:
    router: Router
    sources: dict[str, str]  # handler name -> where it came from


def _router_of(obj: object, settings: Settings, what: str) -> Router | None:
    if isinstance(obj, Router):
        return obj
    if not isinstance(obj, ModuleType):
        return None
    candidate = getattr(obj, "router", None)
    if isinstance(candidate, Router):
        return candidate
    build = getattr(obj, "build_router", None)
    if callable(build):
        try:
            built = build(settings)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{what}: {exc}") from exc
        except Exception as exc:
            raise ConfigurationError(f"{what}: build_router(settings) failed: {exc!r}") from exc
        if not isinstance(built, Router):
            raise ConfigurationError(f"{what}: build_router(settings) must return a Router")
        return built
    return None


def _import(name: str, what: str, fix: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise ConfigurationError(f"{what} failed to import: {exc!r}. {fix}") from exc


def load_handlers(settings: Settings) -> Loaded:
    found: list[tuple[str, Router]] = []
    module_origins: dict[str, str] = {}  # module name -> origin, to attribute @on handlers

    modules: dict[str, str] = {}  # module -> the setting that names it, in order, each once
    for module, enabled, setting in BUILTINS.values():
        if enabled(settings):
            modules[module] = setting
    for module in settings.handler_modules:
        modules.setdefault(module, "UPHOOKS_HANDLER_MODULES")

    # Like `python -m` and celery: a module in the directory the worker runs from can be named.
    if modules and os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    for name, setting in modules.items():
        what = f"handler module {name!r} (from {setting})"
        fix = "Fix the module or remove it from the setting."
        router = _router_of(_import(name, what, fix), settings, what)
        origin = f"module {name} ({setting})"
        module_origins[name] = origin
        if router is not None:
            found.append((origin, router))

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = f", package {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
        origin = f"entry point {ep.name} = {ep.value}{dist}"
        what = f"handler plugin {ep.name!r} (entry point {ep.value!r} in {ENTRY_POINT_GROUP!r})"
        try:
            obj = ep.load()
        except Exception as exc:
            raise ConfigurationError(
                f"{what} failed to load: {exc!r}. Fix or uninstall that package."
            ) from exc
        if isinstance(obj, ModuleType):
            module_origins.setdefault(obj.__name__, origin)
        router = _router_of(obj, settings, what)
        if router is not None:
            found.append((origin, router))

    merged = Router()
    sources: dict[str, str] = {}
    for origin, router in found:
        for spec in router:
            merged.add(spec)
            sources.setdefault(spec.name, origin)
    for spec in default_router:
        merged.add(spec)
        sources.setdefault(spec.name, _on_origin(spec, module_origins))
    for spec in merged:
        _check_against_settings(spec, settings, sources[spec.name])
    return Loaded(merged, sources)


def _on_origin(spec: HandlerSpec, module_origins: dict[str, str]) -> str:
    module = spec.func.__module__
    for name in sorted(module_origins, key=len, reverse=True):
        if module == name:
            return module_origins[name]
        if module.startswith(name + "."):
            return f"{module_origins[name]}, @on in {module}"
    return f"@on in {module}"


def _check_against_settings(spec: HandlerSpec, settings: Settings, origin: str) -> None:
    soft = settings.task_soft_time_limit_seconds
    if spec.time_limit is not None and spec.time_limit >= soft:
        raise ConfigurationError(
            f"handler {spec.name!r} ({origin}) has time_limit={spec.time_limit}s, not below "
            f"UPHOOKS_TASK_SOFT_TIME_LIMIT_SECONDS={soft}: the task's own limit would cut it "
            "first. Lower the handler's limit or raise the task's."
        )
    for event in sorted(spec.events - {ANY_EVENT} - set(FILTERS_BY_EVENT)):
        log.warning(
            "handler %r listens to %r, which is not a documented event name; fine if it is a "
            "newer event, a typo otherwise",
            spec.name,
            event,
        )


def describe(spec: HandlerSpec, settings: Settings, source: str) -> dict[str, Any]:
    """What ``uphooks handlers`` shows: the handler's options with the defaults filled in."""
    backoff = spec.backoff
    return {
        "name": spec.name,
        "source": source,
        "events": sorted(spec.events),
        "filters": {k: sorted(v, key=str) for k, v in sorted(spec.filters.items())},
        "queue": spec.queue or settings.queue,
        "max_attempts": spec.max_attempts or settings.retry_max_attempts,
        "backoff": {
            "base_seconds": backoff.base if backoff else settings.retry_base_delay_seconds,
            "max_seconds": backoff.max if backoff else settings.retry_max_delay_seconds,
        },
        "time_limit_seconds": spec.time_limit or settings.task_soft_time_limit_seconds,
        "ordered_by": (
            spec.ordered_by
            if spec.ordered_by is None or isinstance(spec.ordered_by, str)
            else getattr(spec.ordered_by, "__qualname__", repr(spec.ordered_by))
        ),
        "async": spec.is_async,
        "concurrency": (spec.concurrency or settings.async_concurrency) if spec.is_async else None,
        "rate": {bucket: str(rate) for bucket, rate in spec.rate.items()},
        "defaults": sorted(
            option
            for option, value in (
                ("queue", spec.queue),
                ("max_attempts", spec.max_attempts),
                ("backoff", spec.backoff),
                ("time_limit", spec.time_limit),
            )
            if value is None
        ),
    }
