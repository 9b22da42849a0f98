"""Which handler modules the worker loads, and the one router built from them.

Sources, in order: the built-in ``log`` handler (unless disabled), the modules named in
``UPHOOKS_HANDLER_MODULES``, and every entry point in the group ``uphooks.handlers`` (each names a
module, or a ``Router`` object). A module registers with ``@on`` (the default router) or exposes a
``router``. Anything that fails to import stops the worker: a silently missing handler is lost work.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType

from handlers.registry import Router, default_router
from uphooks.errors import ConfigurationError
from uphooks.settings import Settings

ENTRY_POINT_GROUP = "uphooks.handlers"


@dataclass(frozen=True)
class Loaded:
    router: Router
    sources: dict[str, str]  # handler name -> where it came from


def _router_of(obj: object) -> Router | None:
    if isinstance(obj, Router):
        return obj
    if isinstance(obj, ModuleType):
        candidate = getattr(obj, "router", None)
        return candidate if isinstance(candidate, Router) else None
    return None


def load_handlers(settings: Settings) -> Loaded:
    found: list[tuple[str, Router]] = []
    modules = (["handlers.log"] if settings.builtin_log_handler else []) + settings.handler_modules
    for name in modules:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            raise ConfigurationError(
                f"handler module {name!r} (from UPHOOKS_HANDLER_MODULES) failed to import: "
                f"{exc!r}. Fix the module or remove it from the setting."
            ) from exc
        router = _router_of(module)
        if router is not None:
            found.append((f"module {name}", router))
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:
            raise ConfigurationError(
                f"handler plugin {ep.name!r} (entry point {ep.value!r} in group "
                f"{ENTRY_POINT_GROUP!r}) failed to load: {exc!r}. Fix or uninstall that package."
            ) from exc
        router = _router_of(obj)
        if router is not None:
            found.append((f"entry point {ep.name} ({ep.value})", router))

    merged = Router()
    sources: dict[str, str] = {}
    for origin, router in [*found, ("@on", default_router)]:
        for spec in router:
            merged.add(spec)
            sources.setdefault(spec.name, origin if origin != "@on" else spec.func.__module__)
    return Loaded(merged, sources)
