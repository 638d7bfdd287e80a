"""Measured layers whose output does not depend on the input (relative-position MLPs, learned queries).

Swin V2's continuous position bias MLP, ConViT's positional projection, XCiT's and
EdgeNeXt's Fourier position encodings and the learned query of an attention pool compute
the same tensor for every image. The per-sample Fisher of such a weight needs one backward
pass *per sample* (the backward of a batch only gives the sum over samples of the gradient
of the one shared output), so the exact estimators cannot measure it. They are not filters
of the image either: the probe's layout leaves them out (found with one forward of two
blank images at the probe's input size), and every estimator then measures the same layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["input_independent"]


def input_independent(model: nn.Module, names: list[str], input_size: tuple[int, ...]) -> list[str]:
    """Names in ``names`` whose module's output never depends on the input batch.

    A model that cannot run at ``input_size`` (or at all on blank images) is left alone: [].
    """
    modules = dict(model.named_modules())
    depends: dict[str, bool] = {}

    def hook_for(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            dep = isinstance(output, torch.Tensor) and output.requires_grad
            depends[name] = depends.get(name, False) or dep  # any call that depends counts
        return hook

    handles = [modules[n.rpartition(".")[0]].register_forward_hook(hook_for(n))
               for n in names if n.rpartition(".")[0] in modules]
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    flags = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in flags:
            p.requires_grad_(False)  # only the input carries gradient: constant outputs stay constant
        x = torch.zeros((2, *input_size), device=device, dtype=dtype, requires_grad=True)
        with torch.enable_grad():
            model(x)
    except Exception:  # noqa: BLE001 - detection is best effort; the estimators report what fails
        return []
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        for h in handles:
            h.remove()
    return [n for n in names if n in depends and not depends[n]]
