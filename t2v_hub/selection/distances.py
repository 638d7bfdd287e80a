"""TASK2VEC distances, vectorised.

``d_sym(a, b)`` is the cosine distance between ``a / (a + b)`` and ``b / (a + b)``
(elementwise; the paper's normalisation makes the distance invariant to the
per-filter scale of the Fisher, which varies by orders of magnitude across
layers). ``d_asym(source -> target) = d_sym(source, target) - alpha * d_sym(source, t0)``
where ``t0`` is the *trivial embedding* of the probe (see
:func:`t2v_hub.trivial.trivial_embedding`): the Fisher of a task whose labels carry
no information. Subtracting the source's distance to it favours experts trained on
richer tasks (larger, more complex), which is what makes the asymmetric distance
pick good experts in the paper.

All functions accept tensors or :class:`Task2VecEmbedding`; matrix versions never
loop over pairs in Python and work in chunks that bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..constants import ASYM_ALPHA
from ..embedding import Task2VecEmbedding

ArrayLike = torch.Tensor | Task2VecEmbedding
# Elements processed per chunk of the (rows x cols x dim) pairwise computation: ~256 MB fp32.
_CHUNK_ELEMENTS = 1 << 26


def _vec(x: ArrayLike) -> torch.Tensor:
    return x.vector if isinstance(x, Task2VecEmbedding) else torch.as_tensor(x, dtype=torch.float32)


def _mat(xs: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor:
    if isinstance(xs, Task2VecEmbedding):
        return xs.vector[None]
    if isinstance(xs, torch.Tensor):
        return xs[None] if xs.dim() == 1 else xs
    embs = list(xs)
    if embs and isinstance(embs[0], Task2VecEmbedding):
        first = embs[0]
        for e in embs[1:]:
            first.check_compatible(e)  # type: ignore[arg-type]
    return torch.stack([_vec(e) for e in embs]) if embs else torch.zeros(0, 0)


def _check_pair(a: ArrayLike, b: ArrayLike) -> None:
    if isinstance(a, Task2VecEmbedding) and isinstance(b, Task2VecEmbedding):
        a.check_compatible(b)


def d_sym(a: ArrayLike, b: ArrayLike) -> float:
    """Symmetric TASK2VEC distance between two embeddings."""
    _check_pair(a, b)
    return float(cdist(_vec(a)[None], _vec(b)[None])[0, 0])


def d_asym(source: ArrayLike, target: ArrayLike, trivial: ArrayLike, alpha: float = ASYM_ALPHA) -> float:
    """Asymmetric distance from a source (expert) task to a target task."""
    _check_pair(source, target)
    _check_pair(source, trivial)
    return d_sym(source, target) - alpha * d_sym(source, trivial)


def cdist(a: ArrayLike | Sequence[ArrayLike], b: ArrayLike | Sequence[ArrayLike],
          weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pairwise symmetric distances, shape (len(a), len(b)), fp32.

    For u = A/(A+B) and v = B/(A+B) (0 where A+B = 0) the cosine needs three sums per pair
    (u.v, u.u, v.v); they are computed in row chunks of an (r, m, d) broadcast so
    peak memory stays near ``_CHUNK_ELEMENTS`` floats whatever the sizes.
    """
    A, B = _mat(a).to(torch.float32), _mat(b).to(torch.float32)
    if A.shape[-1] != B.shape[-1]:
        raise ValueError(f"embedding dimensions differ: {A.shape[-1]} vs {B.shape[-1]}")
    n, m, d = A.shape[0], B.shape[0], A.shape[-1]
    if weights is not None and not (isinstance(weights, torch.Tensor) and weights.shape == (d,)):
        raise ValueError(f"weights={type(weights).__name__}{tuple(getattr(weights, 'shape', ()))}: expected a "
                         f"tensor of shape ({d},), one positive weight per filter, or None")
    out = torch.empty(n, m, dtype=torch.float32)
    if n == 0 or m == 0:
        return out
    # Chunk over both axes so that r * c * d stays bounded.
    cols = max(1, min(m, _CHUNK_ELEMENTS // max(d, 1)))
    rows = max(1, min(n, _CHUNK_ELEMENTS // max(cols * d, 1)))
    for j in range(0, m, cols):
        Bj = B[j : j + cols]
        for i in range(0, n, rows):
            Ai = A[i : i + rows]
            out[i : i + rows, j : j + cols] = sym_block(Ai, Bj, weights)
    return out


def sym_block(A: torch.Tensor, B: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The reference d_sym for every (row of A, row of B): shape (len(A), len(B)).

    ``weights`` (dim,) > 0 makes the cosine a weighted one, ``sum w u v / sqrt(sum w u^2 sum w v^2)``
    (MODEL2VEC's learned per-layer weights); None is the paper's d_sym. A weight cannot be folded
    into A and B: d_sym is invariant to any per-filter scale of its inputs.
    """
    # Filters dead in both tasks (a + b == 0) contribute nothing; an absolute epsilon
    # in the denominator would break the per-filter scale invariance for tiny Fishers.
    s = A[:, None, :] + B[None, :, :]
    inv = torch.where(s > 0, 1.0 / s.clamp_min(1e-38), torch.zeros((), dtype=s.dtype))
    u = A[:, None, :] * inv
    v = B[None, :, :] * inv
    if weights is not None:  # sum w u v = sum (sqrt(w) u)(sqrt(w) v): the plain cosine of rescaled u, v
        root = weights.to(u.dtype).sqrt()
        u, v = u * root, v * root
    uv = (u * v).sum(-1)
    uu = (u * u).sum(-1)
    vv = (v * v).sum(-1)
    # Zero vectors (all filters dead) have no direction: clamp so the distance is 1, not NaN,
    # and take the sqrt of the clamped product so the gradient there is 0, not NaN (MODEL2VEC
    # trains through this function when numba is not installed).
    cos = uv / (uu * vv).clamp_min(torch.finfo(s.dtype).tiny).sqrt()
    return (1.0 - cos).clamp(0.0, 2.0)


def paired_sym(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """d_sym of row i of ``A`` with row i of ``B``, shape (n,): the diagonal of ``cdist(A, B)`` without the rest."""
    A, B = A.to(torch.float32), B.to(torch.float32)
    if A.shape != B.shape:
        raise ValueError(f"paired rows need the same shape, got {tuple(A.shape)} and {tuple(B.shape)}")
    s = A + B
    inv = torch.where(s > 0, 1.0 / s.clamp_min(1e-38), torch.zeros((), dtype=s.dtype))
    u, v = A * inv, B * inv
    cos = (u * v).sum(-1) / ((u * u).sum(-1) * (v * v).sum(-1)).clamp_min(torch.finfo(s.dtype).tiny).sqrt()
    return (1.0 - cos).clamp(0.0, 2.0)


def pdist(xs: ArrayLike | Sequence[ArrayLike]) -> torch.Tensor:
    """Square symmetric distance matrix of a set of embeddings (zeros on the diagonal)."""
    M = _mat(xs)
    D = cdist(M, M)
    D.fill_diagonal_(0.0)
    return 0.5 * (D + D.T)


def cdist_asym(
    sources: ArrayLike | Sequence[ArrayLike],
    targets: ArrayLike | Sequence[ArrayLike],
    trivial: ArrayLike,
    alpha: float = ASYM_ALPHA,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Asymmetric distances, shape (len(sources), len(targets)): source (expert) -> target task."""
    S, T = _mat(sources), _mat(targets)
    to_trivial = cdist(S, _vec(trivial)[None], weights)  # (n, 1)
    return cdist(S, T, weights) - alpha * to_trivial
