"""Per-sample squared gradients of norm-layer scales (BatchNorm in eval mode, LayerNorm, GroupNorm).

The scale gamma multiplies the normalised input x_hat, so a sample's gradient is
sum over positions of (dL/dz) * x_hat, z = gamma * x_hat + beta: one value per
channel and sample, no unfolding needed. BatchNorm uses its running statistics
(the probe is in eval mode, so x_hat does not depend on the rest of the batch).
timm's ``BatchNormAct2d`` applies its activation inside the module, so the
captured output gradient is taken back through the activation by a small
vector-Jacobian product on a recomputed z.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def is_norm(module: nn.Module) -> bool:
    return isinstance(module, NORM_TYPES)


def _has_inner_activation(module: nn.Module) -> bool:
    # timm's BatchNormAct2d (and friends) carry `act` and `drop` submodules.
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and hasattr(module, "act")


def _x_hat(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.float()
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = module.running_mean.float().view(shape)
        var = module.running_var.float().view(shape)
        return (x - mean) * torch.rsqrt(var + module.eps)
    if isinstance(module, nn.LayerNorm):
        dims = tuple(range(-len(module.normalized_shape), 0))
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        return (x - mean) * torch.rsqrt(var + module.eps)
    assert isinstance(module, nn.GroupNorm)
    b, c = x.shape[:2]
    xg = x.reshape(b, module.num_groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = xg.var(-1, unbiased=False, keepdim=True)
    return ((xg - mean) * torch.rsqrt(var + module.eps)).reshape(x.shape)


def _grad_before_activation(module: nn.Module, x: torch.Tensor, g_out: torch.Tensor) -> torch.Tensor:
    with torch.enable_grad():
        z = F.batch_norm(
            x.detach().float(), module.running_mean, module.running_var,
            None if module.weight is None else module.weight.detach().float(),
            None if module.bias is None else module.bias.detach().float(),
            False, 0.0, module.eps,
        ).requires_grad_(True)
        # clone(): timm's activations may run in place, which a leaf tensor forbids.
        out = module.act(module.drop(z.clone()))
        (g_z,) = torch.autograd.grad(out, z, g_out.float())
    return g_z


def norm_persample(module: nn.Module, x: torch.Tensor, g_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-sample gradient of ``module.weight``, shape (B, *weight.shape)."""
    g = _grad_before_activation(module, x, g_out) if _has_inner_activation(module) else g_out.float()
    prod = (g * _x_hat(module, x)).to(dtype)
    if isinstance(module, nn.LayerNorm):
        # Sum over every axis except the sample and the normalised ones (tokens).
        n = len(module.normalized_shape)
        lead = tuple(range(1, prod.dim() - n))
        return prod.sum(dim=lead) if lead else prod
    return prod.flatten(2).sum(-1)  # (B, C): BatchNorm and GroupNorm scale channels


def norm_sq_sum(module: nn.Module, x: torch.Tensor, g_out: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return norm_persample(module, x, g_out, dtype).square().sum(0)
