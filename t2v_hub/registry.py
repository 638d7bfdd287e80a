"""One plugin registry, in timm's style: ``register`` / ``list`` / ``get``.

Two instances live here: probe adapters (keyed by timm family, the module that
defines a model class) and integrations (hooks into other tools: Optuna, ...).
Third-party plugins register through the entry-point groups ``t2v_hub.probes`` and
``t2v_hub.integrations``, discovered once, on first use, unless
``T2V_HUB_DISABLE_PLUGIN_AUTOLOAD`` is set (read at that moment, not at import, so
tests and embedding applications can set it late). A plugin that fails to import is
recorded and skipped: it must not break the core.

Registering a name twice is refused unless ``overwrite=True`` (a silent second
registration would make results depend on import order); a discovered entry point
never replaces an explicit registration.

Imports nothing of t2v-hub but ``constants`` and ``errors``: every floor may use it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import metadata
from typing import Any, Generic, TypeVar

from .constants import INTEGRATION_ENTRY_POINT_GROUP, PROBE_ENTRY_POINT_GROUP
from .errors import T2VError

logger = logging.getLogger(__name__)

T = TypeVar("T")
AUTOLOAD_ENV = "T2V_HUB_DISABLE_PLUGIN_AUTOLOAD"


class RegistryError(T2VError):
    """A plugin name is unknown or already taken."""


def autoload_disabled() -> bool:
    """Whether entry-point discovery is off (the one place that reads the flag)."""
    return os.environ.get(AUTOLOAD_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class Registry(Generic[T]):
    """Named plugins of one kind, with the distribution that provides each.

    ``convert`` turns what an entry point loads into the registered object (for
    example, instantiate a class); it runs for discovered plugins only.
    """

    def __init__(self, kind: str, group: str, convert: Callable[[Any], T] | None = None,
                 key: Callable[[T, str], str] | None = None) -> None:
        self.kind, self.group = kind, group
        self._convert = convert or (lambda obj: obj)
        self._key = key or (lambda obj, ep_name: getattr(obj, "name", ep_name))
        self._items: dict[str, T] = {}
        self._sources: dict[str, str] = {}
        self._failed: dict[str, str] = {}
        self._loaded = False

    def register(self, name: str, obj: T, *, source: str = "t2v-hub", overwrite: bool = False) -> None:
        if not name or not isinstance(name, str):
            raise RegistryError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items and not overwrite:
            raise RegistryError(
                f"a {self.kind} named {name!r} is already registered (from {self._sources[name]}); "
                "pass overwrite=True to replace it"
            )
        self._items[name] = obj
        self._sources[name] = source

    def _autoload(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if autoload_disabled():
            return
        for ep in metadata.entry_points(group=self.group):
            dist = ep.dist.name if getattr(ep, "dist", None) is not None else "?"
            try:
                obj = self._convert(ep.load())
                name = self._key(obj, ep.name)
            except Exception as exc:  # a broken plugin must not break the core
                logger.warning("%s plugin %r (%s) failed to load: %s", self.kind, ep.name, dist, exc)
                self._failed[ep.name] = f"{dist}: {type(exc).__name__}: {exc}"
                continue
            if name in self._items:  # explicit registrations win over discovery
                continue
            self.register(name, obj, source=dist)

    def list(self) -> dict[str, str]:
        """name -> distribution that provides it, sorted by name."""
        self._autoload()
        return dict(sorted(self._sources.items()))

    def failed(self) -> dict[str, str]:
        """Entry points that could not be loaded: name -> reason."""
        self._autoload()
        return dict(self._failed)

    def find(self, name: str) -> T | None:
        self._autoload()
        return self._items.get(name)

    def get(self, name: str) -> T:
        obj = self.find(name)
        if obj is None:
            have = ", ".join(sorted(self._items)) or "none"
            hint = f" (plugin autoload is off: unset {AUTOLOAD_ENV})" if autoload_disabled() else ""
            raise RegistryError(f"no {self.kind} named {name!r}; registered: {have}{hint}")
        return obj

    def reset(self) -> None:
        """Forget every registration and discover again on next use (tests)."""
        self._items.clear()
        self._sources.clear()
        self._failed.clear()
        self._loaded = False


def _instance(obj: Any) -> Any:
    return obj() if isinstance(obj, type) else obj


PROBE_ADAPTERS: Registry[Any] = Registry(
    "probe adapter", PROBE_ENTRY_POINT_GROUP, convert=_instance, key=lambda a, n: getattr(a, "family", n)
)
INTEGRATIONS: Registry[Any] = Registry("integration", INTEGRATION_ENTRY_POINT_GROUP)


def register_integration(name: str, integration: Any, source: str = "t2v-hub", *, overwrite: bool = False) -> None:
    """Register ``integration`` (a class or an instance) under ``name``."""
    INTEGRATIONS.register(name, integration, source=source, overwrite=overwrite)


def list_integrations() -> dict[str, str]:
    return INTEGRATIONS.list()


def failed_integrations() -> dict[str, str]:
    return INTEGRATIONS.failed()


def failed_plugins() -> dict[str, str]:
    """Every entry point of either group that could not be loaded: 'kind name' -> reason."""
    out = {f"probe adapter {n}": why for n, why in PROBE_ADAPTERS.failed().items()}
    out.update({f"integration {n}": why for n, why in INTEGRATIONS.failed().items()})
    return out


def get_integration(name: str) -> Any:
    """The integration registered as ``name`` (instantiated if a class was registered)."""
    return _instance(INTEGRATIONS.get(name))


__all__ = [
    "INTEGRATIONS",
    "PROBE_ADAPTERS",
    "Registry",
    "RegistryError",
    "autoload_disabled",
    "failed_integrations",
    "failed_plugins",
    "get_integration",
    "list_integrations",
    "register_integration",
]
