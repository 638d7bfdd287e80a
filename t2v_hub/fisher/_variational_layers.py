"""Per-layer machinery of the variational Fisher (see :mod:`.variational` for the maths).

Which layers can be measured, the variational state of each (log-precisions per filter,
log prior precision per layer, KL term) and the output-noise variance of the local
reparametrisation trick for Linear, Conv1d/2d/3d (any groups, padding mode) and timm's
``Conv2dSame``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FisherError

try:  # timm is a dependency, but keep this module importable without it.
    from timm.layers import Conv2dSame as _Conv2dSame
    from timm.layers import Linear as _TimmLinear
    from timm.layers import pad_same as _pad_same
except ImportError:  # pragma: no cover - exercised only without timm
    _Conv2dSame = None
    _TimmLinear = None
    _pad_same = None

# Below this the noise std is treated as 0 (sqrt has an infinite slope at 0).
TINY_VAR = 1e-30
# Added before taking logs of weight statistics (all-zero filters / layers).
INIT_EPS = 1e-8


def supported_forwards() -> set[Any]:
    """Forward implementations whose output is the plain linear op on ``module.weight``.

    A subclass that rewrites the weight in ``forward`` (timm's StdConv2d standardises it)
    would make output noise on the raw weight wrong, so such layers are refused.
    """
    fwd: set[Any] = {nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}
    if _Conv2dSame is not None:
        fwd.add(_Conv2dSame.forward)
    if _TimmLinear is not None:
        fwd.add(_TimmLinear.forward)
    return fwd


@dataclass
class VarLayer:
    """Variational state of one measured weight."""

    name: str
    module: nn.Module
    log_prec: Tensor  # L_f, shape [F]; Λ_f = exp(L_f)
    log_prior: Tensor  # ℓ, 0-dim; λ² = exp(ℓ)
    sum_w2: Tensor  # ‖ŵ‖², constant
    per_filter: int  # n
    calls: int = 0

    @property
    def numel(self) -> int:
        return self.per_filter * self.log_prec.numel()

    def kl(self) -> Tensor:
        """KL(N(ŵ, Σ) ‖ N(0, λ⁻² I)) with Σ = diag(exp(-L_f)) repeated over each filter."""
        n, k = self.per_filter, self.numel
        lam2 = self.log_prior.exp()
        trace = n * torch.exp(-self.log_prec).sum()
        log_det_prec = n * self.log_prec.sum()  # −log|Σ|
        return 0.5 * (lam2 * (self.sum_w2 + trace) - k * self.log_prior + log_det_prec - k)


def tap_energy(module: nn.Module, x2: Tensor) -> Tensor:
    """``op(x², 1)``: the sum of ``x²`` over each output's receptive field, one map per group.

    Returns ``[..., 1]`` for Linear and ``[B, groups, *spatial]`` for convolutions.
    """
    if isinstance(module, nn.Linear):
        return x2.sum(dim=-1, keepdim=True)
    conv = module
    assert isinstance(conv, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    groups = conv.groups
    ones = torch.ones((groups, *conv.weight.shape[1:]), dtype=x2.dtype, device=x2.device)
    if _Conv2dSame is not None and isinstance(conv, _Conv2dSame):
        # TF "same" padding depends on the input size: pad exactly as timm's forward does.
        assert _pad_same is not None
        x2 = _pad_same(x2, list(conv.kernel_size), list(conv.stride), list(conv.dilation), value=0.0)
        return F.conv2d(x2, ones, None, conv.stride, 0, conv.dilation, groups)
    # _conv_forward applies the module's padding (ints or "same") and padding_mode.
    return conv._conv_forward(x2, ones, None)


def noise_variance(layer: VarLayer, x: Tensor, floor: float) -> Tensor:
    """Variance of each output under the weight posterior (local reparametrisation)."""
    module = layer.module
    x2 = x.square()
    if floor > 0:
        x2 = x2 + floor
    energy = tap_energy(module, x2)
    var = torch.exp(-layer.log_prec)  # s_f, [F]
    if isinstance(module, nn.Linear):
        return energy * var  # [..., 1] * [F]
    num_filters = var.numel()
    groups = energy.shape[1]
    if groups != num_filters:  # filters of one group share the same tap energy
        energy = energy.repeat_interleave(num_filters // groups, dim=1)
    return energy * var.view(1, num_filters, *([1] * (energy.dim() - 2)))


def resolve_layers(
    work: nn.Module, names: list[str], var_init_scale: float, prior_precision: float | None, learn_prior: bool
) -> list[VarLayer]:
    """Validate ``names`` on the working copy and build each layer's initial state."""
    modules = dict(work.named_modules())
    params = dict(work.named_parameters())
    supported = supported_forwards()
    layers: list[VarLayer] = []
    for name in names:
        mod_name, _, leaf = name.rpartition(".")
        module = modules.get(mod_name)
        if name not in params or leaf != "weight" or module is None:
            raise FisherError(
                f"variational Fisher measures Conv/Linear weights; {name!r} is not one. "
                "Pass params from filter_parameter_names(model) (without norm layers)."
            )
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d):
            raise FisherError(
                f"variational Fisher supports Conv and Linear weights only; {name!r} belongs to a "
                f"{type(module).__name__}. Use method='montecarlo' for it."
            )
        if type(module).forward not in supported:
            raise FisherError(
                f"{name!r} belongs to {type(module).__name__}, whose forward transforms the weight; "
                "the local reparametrisation would be wrong. Use method='montecarlo'."
            )
        w = module.weight.detach()
        num_filters = w.shape[0]
        flat = w.reshape(num_filters, -1)
        # Prior precision: 1 / mean(w²) (the reference's prior *variance* is mean(w²)).
        lam2 = (
            prior_precision if prior_precision is not None else 1.0 / (float(flat.square().mean()) + INIT_EPS)
        )
        # Reference init: posterior variance = scale × per-filter variance of the weights.
        filt_var = flat.var(dim=1, unbiased=False) if flat.shape[1] > 1 else flat.square().mean(dim=1)
        live = filt_var > 0
        if bool(live.any()):
            # A constant (e.g. pruned, all-zero) filter would start at precision ~1e8 and need
            # thousands of steps to come down, reporting a huge bogus Fisher meanwhile: give it
            # the layer's typical filter variance instead.
            filt_var = torch.where(live, filt_var, filt_var[live].mean())
            init = -torch.log(var_init_scale * filt_var + INIT_EPS)
        else:  # all-zero layer: start at Λ = λ², the stationary point of a zero Hessian
            init = torch.full_like(filt_var, math.log(lam2))
        log_prec = nn.Parameter(init)
        log_prior = torch.tensor(math.log(lam2), dtype=torch.float32, device=w.device)
        layers.append(
            VarLayer(
                name=name,
                module=module,
                log_prec=log_prec,
                log_prior=nn.Parameter(log_prior) if learn_prior else log_prior,
                sum_w2=flat.square().sum(),
                per_filter=flat.shape[1],
            )
        )
    return layers
