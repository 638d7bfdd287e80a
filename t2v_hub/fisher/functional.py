"""Weights used through a direct ``F.linear`` call (BEiT/EVA attention), captured as if their module ran.

The per-sample estimators hook modules; a model that reads ``self.qkv.weight`` and calls
``F.linear`` itself bypasses the module's forward. A ``TorchFunctionMode`` sees those calls
and hands (input, output) to the weight's tap, which then treats them as a module call.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .common import autocast_ctx


class FunctionalLinear(TorchFunctionMode):
    """Routes ``F.linear(x, W, b)`` calls on a measured weight ``W`` to that weight's tap,
    as if its module had been called: same input, same output-gradient hook."""

    def __init__(self, taps: list[Any]) -> None:
        super().__init__()
        self.by_weight = {id(t.module.weight): t for t in taps}
        self.calls: set[int] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func is F.linear or func is torch._C._nn.linear:
            weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
            tap = self.by_weight.get(id(weight))
            if tap is not None:
                x = kwargs.get("input", args[0] if args else None)
                self.calls.add(id(weight))
                if tap.active:
                    tap.forward_hook(tap.module, (x,), out)
        return out


def calls_linear(model: nn.Module, x: torch.Tensor, dtype: torch.dtype | None, taps: list[Any]) -> list[Any]:
    """Those of ``taps`` whose weight reaches the output through a direct ``F.linear`` call (one forward)."""
    mode = FunctionalLinear(taps)  # the caller has every tap inactive: nothing is captured
    with torch.no_grad(), autocast_ctx(x.device, dtype), mode:
        model(x[:1])
    return [t for t in taps if id(t.module.weight) in mode.calls]
