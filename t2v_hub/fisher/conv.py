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
the batch ``chunk`` samples at a time so that memory stays bounded. Layers with few
output positions (``L <= pairwise_max``; late stages at low resolution) skip per-sample
gradients altogether and use the pairwise formula of :mod:`.linear` on the patches.

Default backend (``auto``, chosen per layer by :func:`pick_backend`): ``grouped`` on CUDA,
where cuDNN runs the many-group weight gradient without materialising patches; on CPU
``grouped`` for layers with many output positions and ``unfold`` (batched GEMMs) for the
rest -- the faster one on each side of the measured crossover -- except depthwise layers,
which always take ``grouped`` (their k*k weights per filter make the unfolded contraction a
sea of tiny matrix products: 4-15x slower at every lite0 layer size).

Padding is applied to the captured input *before* the weight-gradient computation
whenever the module pads outside the convolution itself: timm's ``Conv2dSame`` (pads
inside ``forward`` with ``pad_same``, asymmetric when strided), string padding
``"same"`` (possibly asymmetric) and non-zero ``padding_mode`` (reflect, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FisherError
from .linear import DEFAULT_CHUNK_BYTES, DEFAULT_PAIRWISE_MAX, chunk_for, contract_sq_sum

CONV_BACKENDS = ("auto", "grouped", "unfold")
# CPU crossover measured per layer on resnet18 at 64 px (batch 32, one thread): grouped wins
# at L = 256 and 1024 output positions (9 vs 17 ms), unfold at L = 64 and 16 (14 vs 31 ms).
AUTO_GROUPED_MIN_POSITIONS = 128
# Depthwise layers with at most this many output positions take the shifted-product form
# (:func:`_depthwise_shift_sq_sum`): at L = 1 it is 5-10x faster than the grouped weight
# gradient; at L = 4 the two are even and beyond that grouped wins (lite0 at 32/64/224 px, 2 threads).
DEPTHWISE_SHIFT_MAX_POSITIONS = 1

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
        from timm.layers.std_conv import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

        # Weight-standardised convolutions (NFNets, BiT, hybrid ViTs): a plain convolution of
        # standardise(w); the per-sample gradient of w is that of the standardised weight
        # pulled back through the standardisation (one small VJP per filter, same for all samples).
        table[StdConv2d.forward] = table[ScaledStdConv2d.forward] = "std"
        table[StdConv2dSame.forward] = table[ScaledStdConv2dSame.forward] = "std_same"
    except ImportError:  # pragma: no cover
        pass
    return table


def standardize(module: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """timm's StdConv2d / ScaledStdConv2d weight: per-filter (w - mean) / sqrt(var + eps), times gain * scale."""
    gain = (module.gain * module.scale).view(-1).to(w.dtype) if hasattr(module, "gain") else None
    return F.batch_norm(w.reshape(1, w.shape[0], -1), None, None, weight=gain, training=True, momentum=0.0,
                        eps=module.eps).reshape_as(w)


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
    standardized: nn.Module | None = None  # a StdConv: gradients are pulled back through `standardize`

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
            "leave it out of `params`, or use method='batch'."
        )
    nd = module.weight.dim() - 2
    stride, dilation = tuple(module.stride), tuple(module.dilation)
    kernel = tuple(module.weight.shape[2:])
    pre_pad: Callable[[torch.Tensor], torch.Tensor] | None = None
    padding: tuple[int, ...] = (0,) * nd
    if kind == "same" or (kind == "std_same" and module.same_pad):
        pre_pad = _same_pad_fn(kernel, stride, dilation)
        if kind == "std_same":
            padding = tuple(int(p) for p in module.padding)
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
    return ConvSpec(nd, tuple(module.weight.shape), stride, padding, dilation, int(module.groups), pre_pad,
                    module if kind in ("std", "std_same") else None)


def pick_backend(backend: str, device: torch.device, length: int) -> str:
    """The backend for one layer. ``auto``: ``grouped`` on CUDA (one cuDNN call, no patches);
    on CPU ``grouped`` only for large outputs (``L > AUTO_GROUPED_MIN_POSITIONS``, where
    unfolding costs more than oneDNN's many-group weight gradient) and ``unfold`` below."""
    if backend != "auto":
        return backend
    if device.type == "cuda":
        return "grouped"
    return "grouped" if length > AUTO_GROUPED_MIN_POSITIONS else "unfold"


def _patches(spec: ConvSpec, a: torch.Tensor) -> torch.Tensor:
    """Unfolded input ``(b, Cin*k, L)`` (``a`` already padded if the module pads outside the conv)."""
    if spec.nd == 1:  # treat (B, C, L) as (B, C, 1, L)
        a = a.unsqueeze(2)
        kernel, stride, padding, dilation = (
            (1, *spec.kernel),
            (1, *spec.stride),
            (0, *spec.padding),
            (1, *spec.dilation),
        )
    else:
        kernel, stride, padding, dilation = spec.kernel, spec.stride, spec.padding, spec.dilation
    if all(k == 1 for k in kernel) and not any(padding):
        # Pointwise conv: the patches are the (strided) input itself, no unfold copy.
        return a[:, :, :: stride[0], :: stride[1]].reshape(a.shape[0], a.shape[1], -1)
    return F.unfold(a, kernel, dilation=dilation, padding=padding, stride=stride)


def _grouped(spec: ConvSpec, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample gradients ``(b, *weight_shape)`` with one weight-gradient conv of b*groups groups."""
    b, cin = a.shape[:2]
    cout = g.shape[1]
    a1 = a.reshape(1, b * cin, *a.shape[2:])
    g1 = g.reshape(1, b * cout, *g.shape[2:])
    wshape = (b * cout, *spec.weight_shape[1:])
    grad = _WEIGHT_GRAD[spec.nd](a1, wshape, g1, spec.stride, spec.padding, spec.dilation, spec.groups * b)
    return grad.reshape(b, *spec.weight_shape)


def conv_sq_sum(
    spec: ConvSpec,
    a: torch.Tensor,
    g: torch.Tensor,
    backend: str,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    pairwise_max: int = DEFAULT_PAIRWISE_MAX,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """``sum_i G_i**2`` shaped like the weight, in ``dtype``; ``a`` is the module's (unpadded) input.

    Few output positions (``L <= pairwise_max``, 1-/2-D) always take the pairwise
    formula of :func:`contract_sq_sum`; otherwise ``backend`` decides.
    """
    if spec.standardized is not None:
        out = torch.zeros(spec.weight_shape, dtype=dtype, device=a.device)
        numel = math.prod(spec.weight_shape)
        step = chunk_for(2 * numel, chunk_size, torch.finfo(dtype).bits // 8, chunk_bytes)
        for s in range(0, a.shape[0], step):
            out += conv_persample(spec, a[s : s + step], g[s : s + step], dtype).square_().sum(dim=0)
        return out
    if spec.pre_pad is not None:
        a = spec.pre_pad(a)
    a = a.to(dtype).contiguous()
    g = g.to(dtype).contiguous()
    b, groups = a.shape[0], spec.groups
    cout = spec.weight_shape[0]
    length = g[0, 0].numel()
    wnumel = 1
    for s in spec.weight_shape:
        wnumel *= s
    if backend == "auto" and _is_depthwise(spec) and length <= DEPTHWISE_SHIFT_MAX_POSITIONS:
        return _depthwise_shift_sq_sum(spec, a, g)
    itemsize = torch.finfo(dtype).bits // 8
    out = torch.zeros(spec.weight_shape, dtype=dtype, device=a.device)
    if backend == "auto" and _is_depthwise(spec):
        # k*k weights per filter: the generic paths run one tiny 1 x L by L x k*k product per
        # channel and sample; the grouped weight gradient was 4-15x faster at every lite0 size.
        backend, pairwise_max = "grouped", -1
    pairwise = spec.nd <= 2 and length <= pairwise_max
    if pairwise or (spec.nd <= 2 and pick_backend(backend, a.device, length) == "unfold"):
        per_in = wnumel // cout * groups  # Cin * k
        if pairwise:  # no per-sample gradient is built: only patches and pair products per sample
            pairs = length * (length + 1) // 2
            step = chunk_for((per_in + cout) * (length + pairs), chunk_size, itemsize, DEFAULT_CHUNK_BYTES)
        else:
            step = chunk_for(per_in * length + wnumel, chunk_size, itemsize, chunk_bytes)
        for s in range(0, b, step):
            cols = _patches(spec, a[s : s + step])
            n = cols.shape[0]
            res = contract_sq_sum(
                g[s : s + step].reshape(n, groups, cout // groups, length),
                cols.reshape(n, groups, per_in // groups, length),
                chunk_size,
                pairwise_max,
                chunk_bytes,
            )
            out += res.reshape(spec.weight_shape)
        return out
    step = chunk_for(wnumel, chunk_size, itemsize, chunk_bytes)
    for s in range(0, b, step):
        out += _grouped(spec, a[s : s + step], g[s : s + step]).square_().sum(dim=0)
    return out


def _depthwise_shift_sq_sum(spec: ConvSpec, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """``sum_i G_i**2`` of a depthwise conv, one kernel offset at a time, for very small outputs.

    ``G_i[c, p, q] = sum_yx a_i[c, y*s + p*d, x*s + q*d] * g_i[c, y, x]`` on the padded input: k*k
    elementwise products of (B, C, L) tensors. With one output position (the last stages of lite0
    at 32 px) that is 5-10x faster than the grouped weight gradient, whose B*C groups of one
    position each are all overhead; with more positions the grouped one wins (BENCHMARKS.md).
    ``a`` is already padded outside the conv (``pre_pad``) and in ``g``'s dtype.
    """
    ph, pw = spec.padding
    if ph or pw:
        a = F.pad(a, (pw, pw, ph, ph))
    (kh, kw), (sh, sw), (dh, dw) = spec.kernel, spec.stride, spec.dilation
    ho, wo = g.shape[2:]
    out = torch.empty(spec.weight_shape[0], kh * kw, dtype=g.dtype, device=g.device)
    for p in range(kh):
        for q in range(kw):
            win = a[:, :, p * dh : p * dh + sh * (ho - 1) + 1 : sh, q * dw : q * dw + sw * (wo - 1) + 1 : sw]
            out[:, p * kw + q] = (win * g).sum(dim=(2, 3)).square_().sum(dim=0)
    return out.reshape(spec.weight_shape)


def filter_sums_cheaper(spec: ConvSpec, length: int) -> bool:
    """Whether :func:`conv_filter_sq_sum` beats building per-sample gradients for this layer.

    Per sample, the gradients cost ``Cout*K*L`` multiply-adds and ``Cout*K`` stored values; the
    per-filter sum through the patches' Gram matrix costs ``L*L*(K + Cout)`` and stores ``L*L``.
    With few output positions (ResNet's later stages, L = 4-64 at 64 px) that is 4-100x less.
    """
    if spec.standardized is not None or spec.groups != 1 or spec.nd > 2:
        return False
    cout = spec.weight_shape[0]
    k = math.prod(spec.weight_shape[1:])
    return 2 * length * (k + cout) < cout * k


def conv_filter_sq_sum(
    spec: ConvSpec, a: torch.Tensor, g: torch.Tensor, chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """``sum_i sum_k G_i[o, k]**2`` per output filter ``o`` (shape ``(Cout,)``), without any G_i.

    ``G_i = g_i A_i^T`` (``g_i``: Cout x L output gradients, ``A_i``: K x L patches), so a filter's
    squared norm is ``g_io^T (A_i^T A_i) g_io``: one L x L Gram matrix per sample replaces the
    Cout x K gradient. Exact; only the per-filter sums (what an embedding keeps) are formed.
    """
    if spec.pre_pad is not None:
        a = spec.pre_pad(a)
    a, g = a.to(dtype), g.to(dtype)
    b, cout = a.shape[0], spec.weight_shape[0]
    length = g[0, 0].numel()
    k = math.prod(spec.weight_shape[1:])
    out = torch.zeros(cout, dtype=dtype, device=a.device)
    step = chunk_for(k * length + length * (length + cout), chunk_size, torch.finfo(dtype).bits // 8, chunk_bytes)
    for s in range(0, b, step):
        cols = _patches(spec, a[s : s + step])  # (n, K, L)
        gram = torch.bmm(cols.transpose(1, 2), cols)  # (n, L, L)
        gs = g[s : s + step].reshape(cols.shape[0], cout, length)
        out += (torch.bmm(gs, gram) * gs).sum(dim=(0, 2))
    # A sum of squares written as a quadratic form: rounding can leave ~0 slightly negative.
    return out.clamp_min_(0.0)


def _is_depthwise(spec: ConvSpec) -> bool:
    """A 2-D convolution with one input channel per filter and one filter per group."""
    return spec.nd == 2 and spec.groups > 1 and spec.weight_shape[1] == 1 and spec.weight_shape[0] == spec.groups


def conv_persample(spec: ConvSpec, a: torch.Tensor, g: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-sample weight gradients ``(b, *weight_shape)`` (for layers called several times)."""
    if spec.pre_pad is not None:
        a = spec.pre_pad(a)
    grads = _grouped(spec, a.to(dtype).contiguous(), g.to(dtype).contiguous())
    m = spec.standardized
    if m is None:
        return grads
    # The gradients above are w.r.t. the standardised weight; the Jacobian of the
    # standardisation is the same for every sample, so one VJP is vmapped over them.
    _, pull = torch.func.vjp(lambda w: standardize(m, w), m.weight.detach().to(dtype))
    return torch.func.vmap(pull)(grads)[0]
