"""Probe adapters: how to reset, split and run a timm model family as a probe.

Registry in timm's style (``register_probe_adapter`` / ``list_probe_adapters`` /
``get_probe_adapter``), keyed by timm *family*: the module that defines the model
class (``resnet``, ``efficientnet``, ``vision_transformer``...). Families without an
adapter use :class:`GenericAdapter`, which relies only on timm's common API
(``reset_classifier``, ``get_classifier``, ``forward_features``, ``forward_head``).
Third-party adapters register through the ``t2v_hub.probes`` entry-point group,
loaded once on first lookup unless T2V_HUB_DISABLE_PLUGIN_AUTOLOAD is set.
"""

from __future__ import annotations

import logging
import os
from importlib import metadata

import torch
from torch import nn

from ..constants import PROBE_ENTRY_POINT_GROUP

logger = logging.getLogger(__name__)


class GenericAdapter:
    """Works for any timm model; subclasses override only what their family needs."""

    family: str = "*"

    def reset_head(self, model: nn.Module, num_classes: int) -> None:
        if not hasattr(model, "reset_classifier"):
            raise TypeError(f"{type(model).__name__} has no reset_classifier(); it is not a timm classifier")
        model.reset_classifier(num_classes)

    def head(self, model: nn.Module) -> nn.Module:
        return model.get_classifier()

    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features: what the head sees."""
        return model.forward_head(model.forward_features(x), pre_logits=True)

    def logits_from_features(self, model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
        return self.head(model)(feats)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r})"


_ADAPTERS: dict[str, GenericAdapter] = {}
_ADAPTER_SOURCES: dict[str, str] = {}
_PLUGINS_LOADED = False


def register_probe_adapter(family: str, adapter: GenericAdapter, source: str = "t2v-hub") -> None:
    _ADAPTERS[family] = adapter
    _ADAPTER_SOURCES[family] = source


def _autoload() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    if os.environ.get("T2V_HUB_DISABLE_PLUGIN_AUTOLOAD", "").lower() in {"1", "true", "yes"}:
        return
    for ep in metadata.entry_points(group=PROBE_ENTRY_POINT_GROUP):
        try:
            cls = ep.load()
            adapter = cls() if isinstance(cls, type) else cls
            family = getattr(adapter, "family", ep.name)
            dist = ep.dist.name if ep.dist is not None else "?"
            if family not in _ADAPTERS:
                register_probe_adapter(family, adapter, source=dist)
        except Exception as exc:  # a broken plugin must not break the core
            logger.warning("probe adapter plugin %r failed to load: %s", ep.name, exc)


def list_probe_adapters() -> dict[str, str]:
    """family -> distribution that provides it."""
    _autoload()
    return dict(sorted(_ADAPTER_SOURCES.items()))


def model_family(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def get_probe_adapter(model_or_family: nn.Module | str) -> GenericAdapter:
    _autoload()
    family = model_or_family if isinstance(model_or_family, str) else model_family(model_or_family)
    return _ADAPTERS.get(family, _GENERIC)


_GENERIC = GenericAdapter()
