"""Integrations registry: hooks that connect t2v-hub to other tools (Optuna, ...).

Same shape as the probe-adapter registry (:mod:`t2v_hub.probes.adapters`):
``register_integration`` / ``list_integrations`` / ``get_integration``. Third-party
integrations register through the ``t2v_hub.integrations`` entry-point group,
discovered on first use unless ``T2V_HUB_DISABLE_PLUGIN_AUTOLOAD=1`` (read at that
moment, not at import, so tests and embedding applications can set it late). A
plugin that fails to import is logged and skipped: it must not break the core.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata
from typing import Any

from .constants import INTEGRATION_ENTRY_POINT_GROUP
from .errors import T2VError

logger = logging.getLogger(__name__)

_INTEGRATIONS: dict[str, Any] = {}
_SOURCES: dict[str, str] = {}
_FAILED: dict[str, str] = {}
_LOADED = False


def autoload_disabled() -> bool:
    return os.environ.get("T2V_HUB_DISABLE_PLUGIN_AUTOLOAD", "").lower() in {"1", "true", "yes"}


def register_integration(name: str, integration: Any, source: str = "t2v-hub") -> None:
    """Register ``integration`` (a class or an instance) under ``name``."""
    _INTEGRATIONS[name] = integration
    _SOURCES[name] = source


def _autoload() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    if autoload_disabled():
        return
    for ep in metadata.entry_points(group=INTEGRATION_ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not break the core
            logger.warning("integration plugin %r (%s) failed to load: %s", ep.name, dist, exc)
            _FAILED[ep.name] = f"{dist}: {type(exc).__name__}: {exc}"
            continue
        name = getattr(obj, "name", ep.name)
        if name not in _INTEGRATIONS:  # explicit registrations win over discovery
            register_integration(name, obj, source=dist)


def list_integrations() -> dict[str, str]:
    """name -> distribution that provides it."""
    _autoload()
    return dict(sorted(_SOURCES.items()))


def failed_integrations() -> dict[str, str]:
    """Entry points that could not be loaded: name -> reason."""
    _autoload()
    return dict(_FAILED)


def get_integration(name: str) -> Any:
    """The integration registered as ``name`` (instantiated if a class was registered)."""
    _autoload()
    if name not in _INTEGRATIONS:
        have = ", ".join(sorted(_INTEGRATIONS)) or "none"
        hint = " (plugin autoload is off: unset T2V_HUB_DISABLE_PLUGIN_AUTOLOAD)" if autoload_disabled() else ""
        raise T2VError(f"no integration named {name!r}; registered: {have}{hint}")
    obj = _INTEGRATIONS[name]
    return obj() if isinstance(obj, type) else obj


def _reset_for_tests() -> None:
    global _LOADED
    _INTEGRATIONS.clear()
    _SOURCES.clear()
    _FAILED.clear()
    _LOADED = False


__all__ = ["get_integration", "list_integrations", "register_integration"]
