"""d_sym between experts and tasks with a hand-written gradient, for MODEL2VEC training.

The autograd version (:func:`t2v_hub.selection.training.sym_distances` without numba) builds six
(tasks x experts x dim) temporaries per call and keeps them for backward: training is
bound by memory traffic (0.1 s per step for 36 tasks x 12 experts x 21,008 filters).
Here one compiled loop per (task, expert) pair computes the three sums of the forward,
and another the gradient with respect to the experts, recomputing u and v on the fly:
nothing of size tasks x experts x dim is ever stored.

With s = m + x, u = m / s, v = x / s (0 where s = 0), A = u.v, B = u.u, C = v.v and
cos = A / sqrt(B C), d = 1 - cos, and per filter k

    dd/dm_k = -[ v (v - u) / (s sqrt(BC)) - cos (u v / B - v^2 / C) / s ]

(du/dm = v/s, dv/dm = -v/s). Pairs where B or C is 0 (an all-zero expert or task)
have d = 1 and no gradient, like the autograd version's clamp. Tasks are constants:
this serves training, where only the experts' biases are learned.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


@functools.cache
def _kernels() -> tuple[Callable, Callable] | None:
    from ._numba import jit as numba_jit

    jit = numba_jit()
    if jit is None:
        return None
    import numpy as np

    # Sums and the gradient are accumulated in float64 whatever the input (21,008-term sums).
    @jit
    def forward(m, x, tiny, out_a, out_b, out_c):  # pragma: no cover - compiled
        for i in range(x.shape[0]):
            for j in range(m.shape[0]):
                a = 0.0
                b = 0.0
                c = 0.0
                for k in range(m.shape[1]):
                    inv = 1.0 / (m[j, k] + x[i, k] + tiny)
                    u = m[j, k] * inv
                    v = x[i, k] * inv
                    a += u * v
                    b += u * u
                    c += v * v
                out_a[i, j] = a
                out_b[i, j] = b
                out_c[i, j] = c

    @jit
    def backward(m, x, tiny, a, b, c, g, out):  # pragma: no cover - compiled
        for i in range(x.shape[0]):
            for j in range(m.shape[0]):
                den = np.sqrt(b[i, j] * c[i, j])
                if g[i, j] == 0.0 or den < 1e-30:
                    continue
                cos = a[i, j] / den
                gd = g[i, j] / den
                cb = g[i, j] * cos / b[i, j]
                cc = g[i, j] * cos / c[i, j]
                for k in range(m.shape[1]):
                    inv = 1.0 / (m[j, k] + x[i, k] + tiny)
                    u = m[j, k] * inv
                    v = x[i, k] * inv
                    out[j, k] -= (gd * v * (v - u) - cb * u * v + cc * v * v) * inv

    return forward, backward


def available() -> bool:
    return _kernels() is not None


class _SymDistances(torch.autograd.Function):
    @staticmethod
    def forward(ctx, experts: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        fwd, _ = _kernels()  # type: ignore[misc]
        m = experts.detach().contiguous()
        x = tasks.detach().to(m.dtype).contiguous()
        shape = (x.shape[0], m.shape[0])
        a, b, c = (torch.empty(shape, dtype=torch.float64) for _ in range(3))
        fwd(m.numpy(), x.numpy(), torch.finfo(m.dtype).tiny, a.numpy(), b.numpy(), c.numpy())
        ctx.save_for_backward(m, x, a, b, c)
        den = (b * c).sqrt()
        cos = torch.where(den >= 1e-30, a / den.clamp_min(1e-30), torch.zeros((), dtype=torch.float64))
        return (1.0 - cos).clamp(0.0, 2.0).to(m.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        _, bwd = _kernels()  # type: ignore[misc]
        m, x, a, b, c = ctx.saved_tensors
        out64 = torch.zeros(m.shape, dtype=torch.float64)
        bwd(m.numpy(), x.numpy(), torch.finfo(m.dtype).tiny, a.numpy(), b.numpy(), c.numpy(),
            grad.to(torch.float64).contiguous().numpy(), out64.numpy())
        return out64.to(m.dtype), None


def sym_distances_fused(experts: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """d_sym (tasks, experts) with a gradient for ``experts`` only; needs numba and CPU tensors."""
    return _SymDistances.apply(experts, tasks)


__all__ = ["available", "sym_distances_fused"]
