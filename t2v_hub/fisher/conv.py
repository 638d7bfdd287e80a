"""Per-sample squared weight gradients of convolutions (no loop over samples).

The weight gradient of a convolution is a correlation of its (padded) input with
its output gradient. Two ways to get it *per sample*:

* ``grouped``: fold the batch into the channel axis and run one weight-gradient
  convolution with ``groups = B * groups``: input ``(1, B*Cin, H, W)``, output
  gradient ``(1, B*Cout, Ho, Wo)`` give a weight gradient ``(B*Cout, Cin/g, kh, kw)``
  that is exactly the stack of the B per-sample gradients. Nothing is unfolded;
  it is the fast path on CUDA (cuDNN) and works for 1-, 2- and 3-D convolutions.
* ``unfold``: ``F.unfold`` the input into patches ``(B, Cin*kh*kw, L)`` and contract
  with the output gradient ``(B, Cout, L)`` per group with one batched matmul.
  Costs the unfolded patches in memory but is a plain GEMM, fast on CPUs.

Both square the per-sample gradients in fp32 (or fp64 for fp64 models) and sum over
the batch ``chunk`` samples at a time so that memory stays bounded.

Padding is applied to the captured input *before* the weight-gradient computation
whenever the module pads outside the convolution itself: timm's ``Conv2dSame`` (pads
inside ``forward`` with ``pad_same``, asymmetric when strided), string padding
``"same"`` (possibly asymmetric) and non-zero ``padding_mode`` (reflect, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FisherError

DEFAULT_CHUNK_BYTES = 256 * 2**20
CONV_BACKENDS = ("auto", "grouped", "unfold")

_WEIGHT_GRAD: dict[int, Callable[..., torch.Tensor]] = {
    1: torch.nn.grad.conv1d_weight,
    2: torch.nn.grad.conv2d_weight,
    3: torch.nn.grad.conv3d_weight,
}


def _same_pad_fn(kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> Callable:
    # timm's pad_same: the padding depends on the input size, so it is computed per call.
    from timm.layers import pad_same

    def pad(x: torch.Tensor) -> torch.Tensor:
        return pad_same(x, list(kernel), list(stride), list(dilation))

    return pad


def _supported_forwards() -> dict[Callable, str]:
    """Module ``forward`` implementations whose weight enters as a plain convolution."""
    table: dict[Callable, str] = {
        nn.Conv1d.forward: "plain",
        nn.Conv2d.forward: "plain",
        nn.Conv3d.forward: "plain",
    }
    try:  # timm is a dependency, but keep the plain path usable without it.
        from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport

        table[Conv2dSame.forward] = "same"
        table[Conv2dSameExport.forward] = "same"
    except ImportError:  # pragma: no cover
        pass
    return table


@dataclass(frozen=True)
class ConvSpec:
    """Geometry of one convolution, with any out-of-convolution padding made explicit."""

    nd: int
    weight_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    pre_pad: Callable[[torch.Tensor], torch.Tensor] | None

    @property
    def kernel(self) -> tuple[int, ...]:
        return self.weight_shape[2:]


def conv_spec(module: nn.Module, name: str) -> ConvSpec:
    """Describe ``module`` or raise FisherError if its forward is not a plain convolution."""
    kind = _supported_forwards().get(type(module).forward)
    if kind is None or not isinstance(module, nn.modules.conv._ConvNd) or module.transposed:
        raise FisherError(
            f"parameter {name!r} belongs to {type(module).__name__}, whose forward is not a plain "
            "convolution of its weight (supported: nn.Conv1d/2d/3d and timm Conv2dSame); "
            "leave it out of `params`."
        )
    nd = module.weight.dim() - 2
    stride, dilation = tuple(module.stride), tuple(module.dilation)
    kernel = tuple(module.weight.shape[2:])
    pre_pad: Callable[[torch.Tensor], torch.Tensor] | None = None
    padding: tuple[int, ...] = (0,) * nd
    if kind == "same":
        pre_pad = _same_pad_fn(kernel, stride, dilation)
    elif isinstance(module.padding, str) or module.padding_mode != "zeros":
        # "same"/"valid" strings and reflect/replicate/circular modes: torch pads with
        # `_reversed_padding_repeated_twice` (extra pixel on the right for odd totals).
        pads = list(module._reversed_padding_repeated_twice)
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        if any(pads):

            def pre_pad(x: torch.Tensor, pads: list[int] = pads, mode: str = mode) -> torch.Tensor:
                return F.pad(x, pads, mode=mode)

    else:
        padding = tuple(int(p) for p in module.padding)
    return ConvSpec(nd, tuple(module.weight.shape), stride, padding, dilation, int(module.groups), pre_pad)


def default_backend(device: torch.device) -> str:
    """``grouped`` on accelerators (one cuDNN call); ``unfold`` on CPUs (GEMMs beat
    oneDNN's very-many-groups weight gradient there; see the benchmark)."""
    return "grouped" if device.type == "cuda" else "unfold"


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in CONV_BACKENDS:
        raise FisherError(f"conv_backend must be one of {CONV_BACKENDS}, got {backend!r}")
    return default_backend(device) if backend == "auto" else backend


def conv_chunk_size(spec: ConvSpec, a: torch.Tensor, backend: str, chunk_size: int | None, itemsize: int) -> int:
    """Samples per chunk: per-sample gradients (+ unfolded patches) under the byte budget."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    per_sample = 1
    for s in spec.weight_shape:
        per_sample *= s
    if backend == "unfold":
        k = 1
        for s in spec.kernel:
            k *= s
        # Unfolded patches: Cin*k per output location, at most input-size many locations.
        per_sample += a[0].numel() * k
    return max(1, DEFAULT_CHUNK_BYTES // (per_sample * itemsize))


def _grouped(spec: ConvSpec, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    b, cin = a.shape[:2]
    cout = g.shape[1]
    a1 = a.reshape(1, b * cin, *a.shape[2:])
    g1 = g.reshape(1, b * cout, *g.shape[2:])
    wshape = (b * cout, *spec.weight_shape[1:])
    grad = _WEIGHT_GRAD[spec.nd](
        a1, wshape, g1, spec.stride, spec.padding, spec.dilation, spec.groups * b
    )
    return grad.reshape(b, *spec.weight_shape)


def _unfold(spec: ConvSpec, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    if spec.nd == 3:  # F.unfold is 2-D only: use the grouped path for Conv3d.
        return _grouped(spec, a, g)
    if spec.nd == 1:  # treat (B, C, L) as (B, C, 1, L)
        kernel, stride, padding, dilation = (1, *spec.kernel), (1, *spec.stride), (0, *spec.padding), (1, *spec.dilation)
        a, g = a.unsqueeze(2), g.unsqueeze(2)
    else:
        kernel, stride, padding, dilation = spec.kernel, spec.stride, spec.padding, spec.dilation
    b = a.shape[0]
    groups = spec.groups
    cols = F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)  # (b, Cin*k, L)
    cols = cols.reshape(b * groups, cols.shape[1] // groups, cols.shape[2])
    gg = g.reshape(b * groups, g.shape[1] // groups, -1)  # (b*G, Cout/G, L)
    grad = torch.bmm(gg, cols.transpose(1, 2))  # (b*G, Cout/G, Cin/G*k)
    return grad.reshape(b, *spec.weight_shape)


def conv_persample(spec: ConvSpec, a: torch.Tensor, g: torch.Tensor, backend: str) -> torch.Tensor:
    """Per-sample weight gradients ``(b, *weight_shape)``; ``a`` is the module input (unpadded)."""
    if spec.pre_pad is not None:
        a = spec.pre_pad(a)
    a = a.contiguous()
    g = g.contiguous()
    return _grouped(spec, a, g) if backend == "grouped" else _unfold(spec, a, g)


def conv_sq_sum(
    spec: ConvSpec,
    a: torch.Tensor,
    g: torch.Tensor,
    backend: str,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``sum_i G_i**2`` shaped like the weight, in ``dtype``."""
    out = torch.zeros(spec.weight_shape, dtype=dtype, device=a.device)
    step = conv_chunk_size(spec, a, backend, chunk_size, torch.finfo(dtype).bits // 8)
    for start in range(0, a.shape[0], step):
        grads = conv_persample(spec, a[start : start + step].to(dtype), g[start : start + step].to(dtype), backend)
        out += grads.square_().sum(dim=0)
    return out
