"""Probe adapters: how to reset, split and run a timm model family as a probe.

Registry in timm's style (``register_probe_adapter`` / ``list_probe_adapters`` /
``get_probe_adapter``), keyed by timm *family*: the module that defines the model
class (``resnet``, ``efficientnet``, ``vision_transformer``...). Families without an
adapter use :class:`GenericAdapter`, which relies only on timm's common API
(``reset_classifier``, ``get_classifier``, ``forward_features``, ``forward_head``).
Third-party adapters register through the ``t2v_hub.probes`` entry-point group,
discovered once on first lookup (see :mod:`t2v_hub.registry`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..registry import PROBE_ADAPTERS


class GenericAdapter:
    """Works for any timm model; subclasses override only what their family needs."""

    family: str = "*"

    def reset_head(self, model: nn.Module, num_classes: int) -> None:
        if not hasattr(model, "reset_classifier"):
            raise TypeError(f"{type(model).__name__} has no reset_classifier(); it is not a timm classifier")
        model.reset_classifier(num_classes)

    def head(self, model: nn.Module) -> nn.Module:
        head = model.get_classifier()
        if hasattr(head, "global_pool") and isinstance(getattr(head, "fc", None), nn.Module):
            # A whole timm ClassifierHead (Sequencer): pooling + fc. The probe's features are
            # already pooled (forward_head(pre_logits=True)); the head proper is its fc.
            head = head.fc
        if isinstance(head, nn.ModuleList):
            # Multi-branch models (CrossViT, EfficientViM): one head per branch, each on its slice
            # of the concatenated pre-logits, combined as the model's own forward_head does.
            return SplitHeads(head, getattr(model, "weights", None) if _softmax_weighted(model) else None)
        if isinstance(head, tuple | list):
            # Distilled models (LeViT, DeiT-distilled) return (head, head_dist); in eval mode timm
            # averages their logits. One module over both, sharing the model's parameters.
            return AveragedHeads(head)
        if isinstance(head, nn.Conv2d) or (isinstance(head, nn.Sequential) and len(head)
                                           and isinstance(head[0], nn.Conv2d)):
            # 1x1-conv classifiers (DLA, some MobileNets) see pooled (B, C, 1, 1) maps; the pre-logit
            # features are (B, C): one view that adds and removes the spatial axes.
            return ConvHeadOnVectors(head)
        return head

    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Pooled pre-logit features: what the head sees."""
        return model.forward_head(model.forward_features(x), pre_logits=True)

    def logits_from_features(self, model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
        return self.head(model)(feats)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r})"


def register_probe_adapter(family: str, adapter: GenericAdapter, source: str = "t2v-hub", *,
                           overwrite: bool = False) -> None:
    """Use ``adapter`` for every model whose class is defined in timm module ``family``."""
    PROBE_ADAPTERS.register(family, adapter, source=source, overwrite=overwrite)


def list_probe_adapters() -> dict[str, str]:
    """family -> distribution that provides it."""
    return PROBE_ADAPTERS.list()


def model_family(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def get_probe_adapter(model_or_family: nn.Module | str) -> GenericAdapter:
    """The family's registered adapter, else the generic one (timm's common API)."""
    family = model_or_family if isinstance(model_or_family, str) else model_family(model_or_family)
    return PROBE_ADAPTERS.find(family) or _GENERIC


class AveragedHeads(nn.Module):
    """The mean of several heads' outputs: timm's eval-mode output of a distilled model's two heads."""

    def __init__(self, heads: tuple[nn.Module, ...] | list[nn.Module]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(x) for h in self.heads]).mean(0)


def _softmax_weighted(model: nn.Module) -> bool:
    # EfficientViM sums its heads' logits weighted by softmax(model.weights); CrossViT averages.
    return type(model).__name__.startswith("EfficientViM")


class SplitHeads(nn.Module):
    """Branch heads over concatenated features: ``sum_i w_i head_i(x_i)``, w uniform or ``softmax(weights)``."""

    def __init__(self, heads: nn.ModuleList, weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.sizes = [int(h.in_features) for h in heads]
        self._weights = weights  # the model's parameter, not a copy (never registered here: not ours to fit)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.sizes, dim=1)
        n = len(self.heads)
        w = self._weights.softmax(-1) if self._weights is not None else torch.full((n,), 1.0 / n, device=x.device)
        return sum(w[i] * head(part) for i, (head, part) in enumerate(zip(self.heads, parts, strict=True)))


class ConvHeadOnVectors(nn.Module):
    """A conv classifier applied to pooled feature vectors: (B, C) -> (B, C, 1, 1) -> head -> (B, K)."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, :, None, None] if x.dim() == 2 else x).flatten(1)


_GENERIC = GenericAdapter()
