"""LogME (You et al., ICML 2021): log marginal evidence of a linear model on frozen features.

For features ``f`` (N x D) and a target column ``y`` (N), the Bayesian linear model
``y = f w + e``, ``w ~ N(0, alpha^-1 I_D)``, ``e ~ N(0, beta^-1 I_N)`` has the evidence

    log p(y | alpha, beta) = D/2 log alpha + N/2 log beta - N/2 log 2 pi
                             - beta/2 ||y - f m||^2 - alpha/2 ||m||^2 - 1/2 log |A|,

    A = alpha I + beta f^T f,   m = beta A^-1 f^T y,

which equals ``log N(y; 0, f f^T / alpha + I / beta)``. With the thin SVD
``f = U S V^T`` (rank r, sigma_i = s_i^2, z = U^T y) every term is a sum over the r
singular directions:

    ||m||^2      = sum beta^2 sigma z^2 / (alpha + beta sigma)^2
    ||y - f m||^2 = sum alpha^2 z^2 / (alpha + beta sigma)^2 + (||y||^2 - ||z||^2)
    log |A|      = sum log(alpha + beta sigma) + (D - r) log alpha

and (alpha, beta) are maximised by MacKay's fixed-point iteration
``gamma = sum beta sigma / (alpha + beta sigma)``, ``alpha = gamma / ||m||^2``,
``beta = (N - gamma) / ||y - f m||^2``. The score of a classification task is the
mean over classes of the per-sample evidence ``L / N`` of the one-hot column of
that class. One eigen-decomposition per (features, task) serves every class and every iteration.

This is our implementation from the paper's equations; the published code stops
after 11 iterations at a 1% change in alpha/beta, we iterate to a 1e-6 relative
change (at most 100 iterations) and count the (D - r) zero singular values that
the published code drops when N < D, so that the value is the exact evidence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Spectrum:
    """Thin SVD of a feature matrix: what every evidence computation needs."""

    u: np.ndarray  # (N, r)
    sigma: np.ndarray  # (r,) squared singular values
    n: int
    d: int


def spectrum(features: np.ndarray, rtol: float = 1e-12) -> Spectrum:
    """Eigen-decomposition of the smaller Gram matrix (f f^T if N <= D, else f^T f), in float64.

    Directions whose squared singular value is below ``rtol`` times the largest are
    dropped: they add ``log alpha`` to ``log |A|`` and their part of ``y`` to the
    out-of-span residual either way, so the evidence does not change. Runs in torch,
    so that ``torch.set_num_threads`` bounds it (a multi-threaded BLAS on a busy
    machine can be 10x slower than one thread).
    """
    import torch

    f = torch.as_tensor(np.asarray(features, dtype=np.float64))
    if f.ndim != 2 or f.shape[0] < 1:
        raise ValueError(f"features must be (N, D) with N >= 1, got {tuple(f.shape)}")
    n, d = f.shape
    w, vecs = torch.linalg.eigh(f @ f.T if n <= d else f.T @ f)
    keep = w > max(float(w.max()), 0.0) * rtol
    # N <= D: the eigenvectors are U; else they are V and U = f V / s.
    u = vecs[:, keep] if n <= d else (f @ vecs[:, keep]) / w[keep].sqrt()
    return Spectrum(u.numpy(), w[keep].numpy(), n, d)


def evidence(sp: Spectrum, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | alpha, beta) (not divided by N)."""
    y = np.asarray(y, dtype=np.float64)
    z = sp.u.T @ y
    z2 = z * z
    out_of_span = max(float(y @ y - z2.sum()), 0.0)
    den = alpha + beta * sp.sigma
    m2 = float((beta**2 * sp.sigma * z2 / den**2).sum())
    res2 = float((alpha**2 * z2 / den**2).sum()) + out_of_span
    logdet = float(np.log(den).sum()) + (sp.d - sp.sigma.size) * math.log(alpha)
    return (
        0.5 * sp.d * math.log(alpha)
        + 0.5 * sp.n * math.log(beta)
        - 0.5 * sp.n * math.log(2 * math.pi)
        - 0.5 * beta * res2
        - 0.5 * alpha * m2
        - 0.5 * logdet
    )


def maximise(sp: Spectrum, y: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6) -> tuple[float, float, float]:
    """(evidence, alpha, beta) at the fixed point of MacKay's updates, starting from alpha = beta = 1."""
    y = np.asarray(y, dtype=np.float64)
    z = sp.u.T @ y
    z2 = z * z
    out_of_span = max(float(y @ y - z2.sum()), 0.0)
    alpha, beta = 1.0, 1.0
    eps = 1e-12
    for _ in range(max_iter):
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
    return evidence(sp, y, alpha, beta), alpha, beta


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6) -> float:
    """LogME score of (features, integer labels): mean over classes of evidence / N. Higher = better."""
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    f = np.asarray(features, dtype=np.float64)
    if f.shape[0] != labels.shape[0]:
        raise ValueError(f"{f.shape[0]} feature rows but {labels.shape[0]} labels")
    sp = spectrum(f)
    classes = np.unique(labels)
    scores = [maximise(sp, (labels == c).astype(np.float64), max_iter=max_iter, tol=tol)[0] / sp.n for c in classes]
    return float(np.mean(scores))


__all__ = ["Spectrum", "evidence", "logme", "maximise", "spectrum"]
