"""LogME (benchmarks/logme.py) against a direct evidence computation and on synthetic tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.logme import evidence, logme, maximise, spectrum


def direct_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log N(y; 0, f f^T / alpha + I / beta), computed without any SVD trick."""
    n = f.shape[0]
    cov = f @ f.T / alpha + np.eye(n) / beta
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return float(-0.5 * (n * math.log(2 * math.pi) + logdet + y @ np.linalg.solve(cov, y)))


@pytest.mark.parametrize("n,d", [(40, 6), (12, 30), (25, 25)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.3, 7.0), (20.0, 0.05)])
def test_evidence_matches_direct_formula(n: int, d: int, alpha: float, beta: float) -> None:
    rng = np.random.default_rng(n * 100 + d)
    f = rng.normal(size=(n, d))
    y = rng.normal(size=n)
    assert evidence(spectrum(f), y, alpha, beta) == pytest.approx(direct_evidence(f, y, alpha, beta), rel=1e-9, abs=1e-8)


def test_rank_deficient_features_match_direct_formula() -> None:
    rng = np.random.default_rng(3)
    f = rng.normal(size=(30, 3)) @ rng.normal(size=(3, 10))  # rank 3, D = 10
    y = rng.normal(size=30)
    sp = spectrum(f)
    assert sp.sigma.size == 3
    assert evidence(sp, y, 0.7, 2.0) == pytest.approx(direct_evidence(f, y, 0.7, 2.0), rel=1e-9)


def test_fixed_point_is_a_maximum() -> None:
    rng = np.random.default_rng(0)
    f = rng.normal(size=(80, 10))
    y = f @ rng.normal(size=10) + 0.5 * rng.normal(size=80)
    sp = spectrum(f)
    best, a, b = maximise(sp, y)
    assert a > 0 and b > 0
    for fa, fb in [(1.3, 1.0), (0.7, 1.0), (1.0, 1.3), (1.0, 0.7), (1.2, 1.2), (0.8, 0.8)]:
        assert evidence(sp, y, a * fa, b * fb) < best
    # beta is close to the precision of the least-squares residual (many samples per dimension)
    r = y - f @ np.linalg.lstsq(f, y, rcond=None)[0]
    assert b == pytest.approx((len(y) - f.shape[1]) / (r @ r), rel=0.05)


def test_predictive_features_beat_noise() -> None:
    rng = np.random.default_rng(1)
    n, k = 300, 4
    labels = rng.integers(0, k, size=n)
    means = rng.normal(scale=3.0, size=(k, 16))
    informative = means[labels] + rng.normal(size=(n, 16))
    noise = rng.normal(size=(n, 16))
    weak = means[labels] * 0.2 + rng.normal(size=(n, 16))
    s_inf, s_weak, s_noise = logme(informative, labels), logme(weak, labels), logme(noise, labels)
    assert s_inf > s_weak > s_noise


def test_permuted_labels_score_lower() -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, size=200)
    f = np.eye(3)[labels] @ rng.normal(size=(3, 8)) * 2 + rng.normal(size=(200, 8))
    assert logme(f, labels) > logme(f, rng.permutation(labels))


def test_logme_shapes_and_errors() -> None:
    with pytest.raises(ValueError):
        logme(np.zeros((5, 3)), np.zeros(4))
    s = logme(np.random.default_rng(0).normal(size=(10, 50)), np.array([0, 1] * 5))
    assert math.isfinite(s)
