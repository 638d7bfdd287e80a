"""Transferability scores: how well a model's frozen features suit a task, from one forward pass.

Each score takes ``features`` (N, D) float and ``targets`` (int class ids (N,), or
float (N,) / (N, K) regression targets) and returns one float, higher = better:

- :func:`logme` (You et al., ICML 2021): the log marginal likelihood (evidence) of a
  Bayesian linear model from the features to each target column, with the prior
  precision ``alpha`` and noise precision ``beta`` set by MacKay's fixed-point updates,
  divided by N and averaged over columns (one-hot columns for classes). Works for
  classification and regression; the best-performing cheap score in the field's
  benchmarks, and cost ``O(N D min(N, D))`` for one SVD shared by all columns.
- :func:`hscore` (Bao et al., ICIP 2019): ``tr(pinv(cov f) cov(E[f | y]))``, the
  class separation the features allow a linear classifier. Classification only;
  one D x D pseudo-inverse: the cheapest score, and an independent view (no model fit).
- :func:`knn_loo`: leave-one-out k-nearest-neighbour accuracy on cosine similarity
  (the non-parametric proxy of Renggli et al., 2022). Classification only;
  ``O(N^2 D)``, no assumption of linear separability.

:data:`SCORES` maps each name to its function and the label kinds it accepts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import T2VError

LOGME_TOL = 1e-3  # relative change of alpha/beta below which the fixed point is reached
LOGME_MAX_ITER = 100


class TransferabilityError(T2VError):
    """Features or targets a transferability score cannot use."""


@dataclass(frozen=True)
class LogMEColumn:
    """The fixed point for one target column: evidence / N, alpha, beta, iterations."""

    evidence: float
    alpha: float
    beta: float
    iterations: int


def _features(features: torch.Tensor) -> torch.Tensor:
    f = torch.as_tensor(features)
    if f.dim() != 2 or f.shape[0] < 2 or f.shape[1] < 1:
        raise TransferabilityError(f"features must be (N, D) with N >= 2, got shape {tuple(f.shape)}")
    if not f.is_floating_point():
        raise TransferabilityError(f"features must be floating point, got {f.dtype}")
    if not torch.isfinite(f).all():
        bad = int((~torch.isfinite(f)).any(1).nonzero()[0])
        raise TransferabilityError(f"features contain NaN or Inf (first in row {bad}); check the model's outputs")
    return f.detach().to("cpu", torch.float64)


def _class_ids(targets: torch.Tensor, n: int, score: str) -> torch.Tensor:
    y = torch.as_tensor(targets)
    if y.is_floating_point() or y.dim() != 1:
        raise TransferabilityError(
            f"{score} needs class ids (an int tensor of shape (N,)); got {y.dtype} {tuple(y.shape)}: "
            "regression targets work with metric='logme'"
        )
    if y.shape[0] != n:
        raise TransferabilityError(f"{n} feature rows but {y.shape[0]} targets; pass one target per row")
    if (y < 0).any():
        raise TransferabilityError("class ids must be >= 0")
    if torch.unique(y).numel() < 2:
        raise TransferabilityError(f"{score} needs at least 2 classes with samples, got 1")
    return y.long()


def _target_columns(targets: torch.Tensor, n: int) -> torch.Tensor:
    """One-hot columns for class ids, the float columns otherwise: (N, K) float64."""
    y = torch.as_tensor(targets)
    if not y.is_floating_point():
        ids = _class_ids(y, n, "logme")
        # One column per class present (an absent class's all-zero column says nothing about the features).
        return (ids[:, None] == torch.unique(ids)[None, :]).to(torch.float64)
    y = y.reshape(y.shape[0], -1) if y.dim() <= 2 else y
    if y.dim() != 2 or y.shape[0] != n:
        raise TransferabilityError(f"regression targets must be (N,) or (N, K) with N = {n}, got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise TransferabilityError("regression targets contain NaN or Inf; drop those rows")
    return y.detach().to("cpu", torch.float64)


@dataclass(frozen=True)
class Spectrum:
    """Thin SVD of a feature matrix (``u`` (N, r), squared singular values ``sigma`` (r,)): all LogME needs."""

    u: torch.Tensor
    sigma: torch.Tensor
    n: int
    d: int


def spectrum(features: torch.Tensor, rtol: float = 1e-12) -> Spectrum:
    """Eigen-decomposition of the smaller Gram matrix (f f^T if N <= D, else f^T f), float64.

    Directions whose squared singular value is below ``rtol`` times the largest are
    dropped: they add ``log alpha`` to ``log |A|`` and their part of ``y`` to the
    out-of-span residual either way, so the evidence does not change.
    """
    f = _features(features)
    n, d = f.shape
    w, vecs = torch.linalg.eigh(f @ f.T if n <= d else f.T @ f)
    keep = w > max(float(w.max()), 0.0) * rtol
    # N <= D: the eigenvectors are U; else they are V and U = f V / s.
    u = vecs[:, keep] if n <= d else (f @ vecs[:, keep]) / w[keep].sqrt()
    return Spectrum(u, w[keep], n, d)


def evidence(sp: Spectrum, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log p(y | alpha, beta) = log N(y; 0, F F^T / alpha + I / beta), in closed form (not divided by N)."""
    y = torch.as_tensor(y, dtype=torch.float64)
    z2 = (sp.u.T @ y) ** 2
    out_of_span = max(float(y @ y - z2.sum()), 0.0)
    den = alpha + beta * sp.sigma
    m2 = float((beta**2 * sp.sigma * z2 / den**2).sum())  # ||m||^2
    res2 = float((alpha**2 * z2 / den**2).sum()) + out_of_span  # ||y - F m||^2
    logdet = float(torch.log(den).sum()) + (sp.d - sp.sigma.numel()) * math.log(alpha)
    return (0.5 * sp.d * math.log(alpha) + 0.5 * sp.n * math.log(beta) - 0.5 * sp.n * math.log(2 * math.pi)
            - 0.5 * beta * res2 - 0.5 * alpha * m2 - 0.5 * logdet)


def maximise(sp: Spectrum, y: torch.Tensor, *, max_iter: int = LOGME_MAX_ITER, tol: float = LOGME_TOL) -> LogMEColumn:
    """MacKay's fixed-point updates of (alpha, beta) from alpha = beta = 1, and the evidence / N there."""
    y = torch.as_tensor(y, dtype=torch.float64)
    z2 = (sp.u.T @ y) ** 2
    out_of_span = max(float(y @ y - z2.sum()), 0.0)
    alpha, beta, iterations, eps = 1.0, 1.0, 0, 1e-12
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported after the loop
        den = alpha + beta * sp.sigma
        gamma = float((beta * sp.sigma / den).sum())
        m2 = float((beta**2 * sp.sigma * z2 / den**2).sum())
        res2 = float((alpha**2 * z2 / den**2).sum()) + out_of_span
        new_alpha = gamma / max(m2, eps) if gamma > 0 else alpha
        new_beta = max(sp.n - gamma, eps) / max(res2, eps)
        done = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = max(new_alpha, eps), max(new_beta, eps)
        if done:
            break
    return LogMEColumn(evidence(sp, y, alpha, beta) / sp.n, alpha, beta, iterations)


def logme_columns(features: torch.Tensor, targets: torch.Tensor, *, max_iter: int = LOGME_MAX_ITER,
                  tol: float = LOGME_TOL) -> list[LogMEColumn]:
    """LogME's fixed point per target column (see :func:`logme`)."""
    sp = spectrum(features)
    y = _target_columns(targets, sp.n)
    return [maximise(sp, y[:, j], max_iter=max_iter, tol=tol) for j in range(y.shape[1])]


def logme(features: torch.Tensor, targets: torch.Tensor) -> float:
    """LogME: the mean over target columns of the maximised log evidence divided by N (higher = better).

    ``features`` (N, D) float; ``targets`` int class ids (N,) (one-hot columns) or float
    regression targets (N,) / (N, K) (columns as given). Fixed-point updates of alpha and
    beta until their ratio changes by less than ``LOGME_TOL`` (relative) or
    ``LOGME_MAX_ITER`` iterations.
    """
    cols = logme_columns(features, targets)
    return float(sum(c.evidence for c in cols) / len(cols))


def hscore(features: torch.Tensor, targets: torch.Tensor) -> float:
    """H-score: ``tr(pinv(cov(f)) cov(g))`` with ``g`` each row's class mean of ``f`` (higher = better)."""
    f = _features(features)
    y = _class_ids(targets, f.shape[0], "hscore")
    fc = f - f.mean(0)
    cov_f = fc.T @ fc / (f.shape[0] - 1)
    means = torch.zeros(int(y.max()) + 1, f.shape[1], dtype=f.dtype).index_add_(0, y, f)
    counts = torch.bincount(y, minlength=means.shape[0]).clamp_min(1).to(f.dtype)
    g = (means / counts[:, None])[y]
    gc = g - g.mean(0)
    cov_g = gc.T @ gc / (f.shape[0] - 1)
    # rcond as in the published code: the pseudo-inverse of a rank-deficient covariance.
    return float(torch.trace(torch.linalg.pinv(cov_f, rtol=1e-15) @ cov_g))


def knn_loo(features: torch.Tensor, targets: torch.Tensor, k: int = 5) -> float:
    """Leave-one-out k-NN accuracy on cosine similarity (ties broken towards the nearer neighbours)."""
    f = _features(features)
    y = _class_ids(targets, f.shape[0], "knn")
    if k < 1:
        raise TransferabilityError(f"k must be at least 1, got {k}")
    n = f.shape[0]
    kk = min(k, n - 1)
    fn = f / f.norm(dim=1, keepdim=True).clamp_min(1e-300)
    classes = int(y.max()) + 1
    correct = 0
    for start in range(0, n, 1024):
        sim = fn[start : start + 1024] @ fn.T
        rows = torch.arange(sim.shape[0])
        sim[rows, rows + start] = -math.inf  # leave the sample itself out
        idx = sim.topk(kk, dim=1).indices  # nearest first
        labels = y[idx]  # (rows, kk), nearest first
        counts = torch.zeros(sim.shape[0], classes, dtype=torch.long).scatter_add_(1, labels, torch.ones_like(labels))
        # Majority vote; among tied classes the one with the nearest member (first in rank order).
        top = counts.gather(1, labels) == counts.max(1, keepdim=True).values
        pred = labels.gather(1, top.to(torch.int8).argmax(1, keepdim=True))[:, 0]
        correct += int((pred == y[start : start + sim.shape[0]]).sum())
    return correct / n


@dataclass(frozen=True)
class Score:
    fn: Callable[[torch.Tensor, torch.Tensor], float]
    regression: bool  # whether float targets are accepted
    description: str


SCORES: dict[str, Score] = {
    "logme": Score(logme, True, "LogME evidence per sample (You et al. 2021)"),
    "hscore": Score(hscore, False, "H-score (Bao et al. 2019)"),
    "knn": Score(knn_loo, False, "leave-one-out 5-NN accuracy, cosine"),
}


def get_score(metric: str) -> Score:
    if not isinstance(metric, str) or metric not in SCORES:  # a list is unhashable: name it, not dict's TypeError
        raise TransferabilityError(f"unknown metric {metric!r}; choose one of {', '.join(SCORES)}")
    return SCORES[metric]


def score_features(features: torch.Tensor, targets: torch.Tensor, metric: str = "logme") -> float:
    """``metric`` of the features for the targets (higher = better)."""
    score = get_score(metric)
    if torch.as_tensor(targets).is_floating_point() and not score.regression:
        raise TransferabilityError(f"metric {metric!r} scores classification tasks only; use metric='logme' "
                                   "for regression targets")
    return score.fn(features, targets)


__all__ = ["SCORES", "LogMEColumn", "Spectrum", "TransferabilityError", "evidence", "get_score", "hscore",
           "knn_loo", "logme", "logme_columns", "maximise", "score_features", "spectrum"]
