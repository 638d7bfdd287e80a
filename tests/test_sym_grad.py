"""MODEL2VEC's fused d_sym: forward and gradient against finite differences and the autograd version."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("numba")

from t2v_hub.selection.kernels.sym_grad import sym_distances_fused  # noqa: E402
from t2v_hub.selection.training import sym_distances  # noqa: E402


def _data(dtype: torch.dtype, zero_expert: bool = False):
    g = torch.Generator().manual_seed(0)
    X = torch.exp(2 * torch.randn(5, 30, generator=g)).to(dtype)
    F = torch.exp(2 * torch.randn(4, 30, generator=g)).to(dtype)
    X[0, :10] = 0  # filters dead in a task, in an expert, and in both
    F[1, 5:15] = 0
    if zero_expert:
        F[2] = 0
    return X, F


def test_gradient_matches_finite_differences() -> None:
    X, F = _data(torch.float64)
    b = torch.zeros_like(F, requires_grad=True)
    assert torch.autograd.gradcheck(lambda b: sym_distances_fused(F * b.exp(), X), (b,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("zero_expert", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_same_values_and_gradients_as_autograd(dtype: torch.dtype, zero_expert: bool, monkeypatch) -> None:
    X, F = _data(dtype, zero_expert)
    w = torch.randn(5, 4, generator=torch.Generator().manual_seed(1), dtype=dtype)
    grads, values = [], []
    for backend in ("numba", "torch"):
        monkeypatch.setenv("T2V_HUB_RANK_BACKEND", backend)
        b = torch.zeros_like(F, requires_grad=True)
        d = sym_distances(F * b.exp(), X)
        (d * w).sum().backward()
        values.append(d.detach())
        grads.append(b.grad)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(values[0], values[1], atol=tol)
    assert torch.isfinite(grads[0]).all() and torch.isfinite(grads[1]).all()  # no NaN for an all-zero expert
    assert torch.allclose(grads[0], grads[1], atol=tol * float(grads[1].abs().max()))
    if zero_expert:
        assert torch.all(values[0][:, 2] == 1.0) and torch.all(grads[0][2] == 0)
