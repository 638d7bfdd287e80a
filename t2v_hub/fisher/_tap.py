"""The capture of one measured module for the per-sample estimators (:mod:`.persample`).

A forward hook keeps the module's input; a tensor hook on its output receives the output
gradient as it was produced and turns (input, output gradient) into the batch's sum of
squared per-sample weight gradients (:mod:`.linear`, :mod:`.conv`, :mod:`.norm`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ..errors import FisherError
from .conv import ConvSpec, conv_filter_sq_sum, conv_persample, conv_spec, conv_sq_sum, filter_sums_cheaper
from .linear import chunk_for, linear_persample, linear_sq_sum
from .norm import is_norm, norm_persample, norm_sq_sum


@functools.cache
def _linear_forwards() -> frozenset[Any]:
    """Forwards that are a plain ``F.linear`` of the weight: nn.Linear's and timm's (which only adds
    a torchscript cast). Looked up on first use: importing timm costs seconds, and reading
    embeddings imports this module without ever measuring a layer."""
    forwards: set[Any] = {nn.Linear.forward}
    try:
        from timm.layers.linear import Linear as _TimmLinear

        forwards.add(_TimmLinear.forward)
    except ImportError:  # pragma: no cover
        pass
    return frozenset(forwards)


class Tap:
    """Capture of one measured module: inputs in forward, output gradients in backward."""

    def __init__(self, name: str, module: nn.Module, weight: torch.Tensor, settings: dict[str, Any]) -> None:
        self.name = name
        self.module = module
        self.shape = weight.shape
        self.numel = weight.numel()
        self.dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32  # of the sums
        self.acc_itemsize = 8 if self.dtype == torch.float64 else 4
        self._acc: torch.Tensor | None = None  # running sum of squared per-sample gradients (see acc)
        self.filter_acc: torch.Tensor | None = None  # filter_means: per-filter sums (conv.filter_sums_cheaper)
        self.settings = settings
        self.norm = is_norm(module)
        self.spec: ConvSpec | None = (
            None if isinstance(module, nn.Linear) or self.norm else conv_spec(module, name)
        )
        if self.spec is None and not self.norm and type(module).forward not in _linear_forwards():
            raise FisherError(
                f"parameter {name!r} belongs to {type(module).__name__}, whose forward is not a plain "
                "F.linear of its weight; leave it out of `params`, or use method='batch' (any layer)."
            )
        self.inputs: list[torch.Tensor | None] = []
        self.last_draw = True  # set by the caller before each backward: False while more draws follow
        self.in_versions: list[int] = []
        self.pending: dict[int, torch.Tensor] = {}
        self.constant_output = False
        self.active = True
        # Rows per sample when a Linear layer sees the batch folded into its leading dim
        # (windowed attention: (B * windows, tokens, C), batch outermost): 1 = batch-first.
        self.fold = 1

    @property
    def acc(self) -> torch.Tensor:
        """The weight-shaped running sum, allocated on first use: a layer whose sums are all
        taken per filter (``filter_means``) never holds a weight-sized buffer."""
        if self._acc is None:
            self._acc = torch.zeros(self.shape, dtype=self.dtype, device=self.module.weight.device)
        return self._acc

    def reset(self) -> None:
        self.inputs.clear()
        self.in_versions.clear()
        self.pending.clear()
        self.constant_output = False

    def forward_hook(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if not self.active:
            return
        a = args[0].detach()  # shares the version counter: in-place edits stay detectable
        self.inputs.append(a)
        self.in_versions.append(a._version)
        if not output.requires_grad:
            self.constant_output = True
            return
        output.register_hook(functools.partial(self._on_grad, len(self.inputs) - 1))

    def _on_grad(self, index: int, grad: torch.Tensor) -> None:
        self._consume(index, grad)
        if self.last_draw and len(self.inputs) == 1:
            # This batch's last backward is past the layer: let its input go now rather than
            # at the batch's end, so the backward's peak holds only the layers still ahead.
            self.inputs[index] = None

    def _consume(self, index: int, grad: torch.Tensor) -> None:
        a = self.inputs[index]
        assert a is not None  # released only after its last backward
        if a._version != self.in_versions[index]:
            raise FisherError(
                f"the input of {self.name!r} was modified in place after the layer used it; "
                "per-sample gradients would be wrong. Use out-of-place ops before this layer."
            )
        if self.fold > 1 and self.spec is not None:  # a conv over (B * fold, C, ...): sum each sample's rows
            if len(self.inputs) > 1:
                raise FisherError(f"{self.name!r} is called several times on a folded batch; "
                                  "use method='batch' for this model")
            cfg, rows = self.settings, self.fold
            step = rows * chunk_for(rows * self.numel, cfg["chunk_size"], self.acc_itemsize,
                                    cfg["chunk_bytes"])  # whole samples per chunk, as the other paths
            for s in range(0, a.shape[0], step):
                p = self._persample(a[s : s + step], grad[s : s + step])
                self.acc.add_(p.reshape(-1, rows, *p.shape[1:]).sum(dim=1).square_().sum(dim=0))
            return
        if self.fold > 1:  # one sample's windows are consecutive rows: regroup them per sample
            a = a.reshape(a.shape[0] // self.fold, -1, a.shape[-1])
            grad = grad.reshape(grad.shape[0] // self.fold, -1, grad.shape[-1])
        if len(self.inputs) > 1:  # shared layer: sum per-call gradients before squaring (flush)
            if self.fold > 1:
                raise FisherError(f"{self.name!r} is called several times on a folded batch; "
                                  "use method='batch' for this model")
            self.pending[index] = self.pending[index] + grad if index in self.pending else grad
            return
        s = self.settings
        if s["filter_means"] and self.spec is not None and filter_sums_cheaper(self.spec, grad[0, 0].numel()):
            part = conv_filter_sq_sum(self.spec, a, grad, s["chunk_size"], self.dtype, s["chunk_bytes"])
            self.filter_acc = part if self.filter_acc is None else self.filter_acc + part
            return
        self.acc.add_(self._sq_sum(a, grad))

    def take(self) -> torch.Tensor:
        """The accumulated sum, weight-shaped (with per-filter sums, each filter's mean
        broadcast); the tap lets go of its buffers, so results are not held twice."""
        out = self.acc if self.filter_acc is None else self._broadcast()
        self._acc = self.filter_acc = None
        return out

    def _broadcast(self) -> torch.Tensor:
        cout = self.shape[0]
        rest = self._acc.reshape(cout, -1).sum(1) if self._acc is not None else 0.0
        per_filter = (self.filter_acc + rest) / (self.numel // cout)
        return per_filter.reshape(cout, *([1] * (len(self.shape) - 1))).expand(self.shape).contiguous()

    def _sq_sum(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if self.norm:
            return norm_sq_sum(self.module, a, g, self.dtype)
        if self.spec is None:
            return linear_sq_sum(a, g, s["chunk_size"], self.dtype, s["pairwise_max"], s["chunk_bytes"])
        return conv_sq_sum(
            self.spec,
            a,
            g,
            s["conv_backend"],
            s["chunk_size"],
            self.dtype,
            s["pairwise_max"],
            s["chunk_bytes"],
        )

    def _persample(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.norm:
            return norm_persample(self.module, a, g, self.dtype)
        if self.spec is None:
            return linear_persample(a.to(self.dtype), g.to(self.dtype))
        return conv_persample(self.spec, a, g, self.dtype)

    def flush(self) -> None:
        """After one backward pass: square the summed per-call gradients of a shared layer."""
        if not self.pending:
            return
        b = self.inputs[0].shape[0]
        cfg = self.settings
        step = chunk_for(self.numel, cfg["chunk_size"], self.acc_itemsize, cfg["chunk_bytes"])
        for start in range(0, b, step):
            total = None
            for i, g in self.pending.items():
                part = self._persample(self.inputs[i][start : start + step], g[start : start + step])
                total = part if total is None else total + part
            assert total is not None
            self.acc.add_(total.square_().sum(dim=0))
        self.pending.clear()
