"""The embedding layout: which weights are measured and how they reduce to filters.

A weight has a *filter axis* when it belongs to a Conv (any groups, including
depthwise and timm's ``Conv2dSame``) or a Linear layer (attention qkv/proj, MLPs):
axis 0 indexes output filters and the embedding keeps one entry per filter, the
mean of the diagonal Fisher over the remaining axes. Norm-layer scales (one
value per channel already) can be added with ``include_norm=True``. The
classifier head is never part of the layout: it is refitted per task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ProbeError

FILTER_MODULES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
NORM_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.GroupNorm,
    nn.LayerNorm,
)


@dataclass(frozen=True)
class LayoutEntry:
    """One measured parameter: its name, full shape and number of filters."""

    name: str
    shape: tuple[int, ...]
    kind: str  # "conv", "linear" or "norm"

    @property
    def num_filters(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class EmbeddingLayout:
    """Ordered list of measured parameters; its hash identifies the embedding space."""

    entries: tuple[LayoutEntry, ...]

    @property
    def dim(self) -> int:
        return sum(e.num_filters for e in self.entries)

    @property
    def param_names(self) -> list[str]:
        return [e.name for e in self.entries]

    def hash(self) -> str:
        payload = json.dumps([[e.name, list(e.shape), e.kind] for e in self.entries])
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def offsets(self) -> dict[str, tuple[int, int]]:
        out: dict[str, tuple[int, int]] = {}
        start = 0
        for e in self.entries:
            out[e.name] = (start, start + e.num_filters)
            start += e.num_filters
        return out

    def reduce(self, per_param: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-filter mean of per-parameter Fisher diagonals, concatenated in layout order."""
        parts = []
        for e in self.entries:
            if e.name not in per_param:
                raise ProbeError(f"Fisher result lacks parameter {e.name!r} of the layout; estimate all layout params.")
            t = per_param[e.name].detach().to(torch.float32)
            if tuple(t.shape) != e.shape:
                raise ProbeError(f"parameter {e.name!r} has shape {tuple(t.shape)}, layout expects {e.shape}")
            # Axis 0 is the output filter for conv and linear weights alike.
            parts.append(t.reshape(e.shape[0], -1).mean(dim=1))
        return torch.cat(parts) if parts else torch.zeros(0)


def head_param_ids(model: nn.Module) -> set[int]:
    """ids of the classifier head's parameters (timm's ``get_classifier``)."""
    getter = getattr(model, "get_classifier", None)
    if getter is None:
        return set()
    head = getter()
    if isinstance(head, nn.Module):
        return {id(p) for p in head.parameters()}
    return set()


def iter_filter_modules(model: nn.Module, include_norm: bool = False) -> Iterable[tuple[str, nn.Module, str]]:
    skip = head_param_ids(model)
    for mod_name, mod in model.named_modules():
        weight = getattr(mod, "weight", None)
        if not isinstance(weight, torch.Tensor) or id(weight) in skip:
            continue
        if isinstance(mod, FILTER_MODULES):
            kind = "linear" if isinstance(mod, nn.Linear) else "conv"
            yield mod_name, mod, kind
        elif include_norm and isinstance(mod, NORM_MODULES) and weight.dim() == 1:
            yield mod_name, mod, "norm"


def build_layout(model: nn.Module, include_norm: bool = False) -> EmbeddingLayout:
    """Layout of a probe in ``named_modules`` order (stable across runs and processes)."""
    entries = []
    for mod_name, mod, kind in iter_filter_modules(model, include_norm=include_norm):
        name = f"{mod_name}.weight" if mod_name else "weight"
        entries.append(LayoutEntry(name=name, shape=tuple(mod.weight.shape), kind=kind))
    if not entries:
        raise ProbeError(
            f"{type(model).__name__} has no filter-bearing layer (Conv or Linear outside the classifier); "
            "use a CNN or transformer backbone as the probe."
        )
    return EmbeddingLayout(tuple(entries))


def filter_parameter_names(model: nn.Module, include_norm: bool = False) -> list[str]:
    """Names of the backbone weights measured by default (filter axis, head excluded)."""
    return build_layout(model, include_norm=include_norm).param_names
