"""Transferability scores against their published definitions, computed naively in float64."""

from __future__ import annotations

import math

import pytest
import torch

from t2v_hub import transferability as T
from t2v_hub.selection.transferability import (
    TransferabilityError,
    evidence,
    logme_columns,
    maximise,
    score_features,
    spectrum,
)

D64 = torch.float64


def direct_evidence(f: torch.Tensor, y: torch.Tensor, alpha: float, beta: float) -> float:
    """log N(y; 0, f f^T / alpha + I / beta), computed without any SVD trick."""
    n = f.shape[0]
    cov = f @ f.T / alpha + torch.eye(n, dtype=D64) / beta
    return float(torch.distributions.MultivariateNormal(torch.zeros(n, dtype=D64), cov).log_prob(y))


@pytest.mark.parametrize(("n", "d"), [(40, 6), (12, 30), (25, 25)])
@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.3, 7.0), (20.0, 0.05)])
def test_evidence_matches_the_gaussian_marginal(n: int, d: int, alpha: float, beta: float) -> None:
    g = torch.Generator().manual_seed(n * 100 + d)
    f, y = torch.randn(n, d, generator=g, dtype=D64), torch.randn(n, generator=g, dtype=D64)
    assert evidence(spectrum(f), y, alpha, beta) == pytest.approx(direct_evidence(f, y, alpha, beta), rel=1e-9)


def test_logme_is_the_maximised_evidence_of_a_known_linear_model() -> None:
    # y = f w + noise with known precisions: the fixed point maximises the closed-form evidence,
    # and beta recovers the noise precision (many samples per dimension).
    g = torch.Generator().manual_seed(0)
    n, d, noise = 400, 8, 0.5
    f = torch.randn(n, d, generator=g, dtype=D64)
    y = f @ torch.randn(d, generator=g, dtype=D64) + noise * torch.randn(n, generator=g, dtype=D64)
    col = logme_columns(f.float(), y[:, None].float())[0]
    best = direct_evidence(f, y, col.alpha, col.beta)
    assert col.evidence == pytest.approx(best / n, rel=1e-4)  # float32 features in, float64 inside
    for fa, fb in [(1.3, 1.0), (0.7, 1.0), (1.0, 1.3), (1.0, 0.7), (1.2, 1.2), (0.8, 0.8)]:
        assert direct_evidence(f, y, col.alpha * fa, col.beta * fb) < best
    assert col.beta == pytest.approx(1 / noise**2, rel=0.15)
    assert 1 <= col.iterations < 100


def test_logme_classification_is_the_mean_over_one_hot_columns() -> None:
    g = torch.Generator().manual_seed(1)
    f = torch.randn(60, 5, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    sp = spectrum(f)
    cols = [maximise(sp, (y == c).to(D64)).evidence for c in range(3)]
    assert T.logme(f, y) == pytest.approx(sum(cols) / 3, rel=1e-12)


def test_logme_ranks_informative_features_first() -> None:
    g = torch.Generator().manual_seed(2)
    n, k = 300, 4
    labels = torch.randint(0, k, (n,), generator=g)
    means = 3.0 * torch.randn(k, 16, generator=g)
    informative = means[labels] + torch.randn(n, 16, generator=g)
    weak = 0.2 * means[labels] + torch.randn(n, 16, generator=g)
    noise = torch.randn(n, 16, generator=g)
    assert T.logme(informative, labels) > T.logme(weak, labels) > T.logme(noise, labels)
    assert T.logme(informative, labels) > T.logme(informative, labels[torch.randperm(n, generator=g)])


def naive_hscore(f: torch.Tensor, y: torch.Tensor) -> float:
    f = f.to(D64)
    cov_f = torch.cov(f.T)
    g = torch.stack([f[y == y[i]].mean(0) for i in range(len(y))])
    return float(torch.trace(torch.linalg.pinv(cov_f, rtol=1e-15) @ torch.cov(g.T)))


def naive_knn(f: torch.Tensor, y: torch.Tensor, k: int) -> float:
    f = f.to(D64)
    hits = 0
    for i in range(len(y)):
        sims = [(float(f[i] @ f[j] / (f[i].norm() * f[j].norm())), j) for j in range(len(y)) if j != i]
        near = [j for _, j in sorted(sims, key=lambda t: -t[0])[:k]]
        votes: dict[int, list[int]] = {}
        for rank, j in enumerate(near):
            votes.setdefault(int(y[j]), []).append(rank)
        # majority; ties to the class whose nearest member is nearer
        best = max(votes.items(), key=lambda kv: (len(kv[1]), -min(kv[1])))[0]
        hits += best == int(y[i])
    return hits / len(y)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hscore_and_knn_match_their_definitions(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (40,), generator=g)
    f = torch.randn(40, 6, generator=g) + torch.randn(3, 6, generator=g)[y]
    assert T.hscore(f, y) == pytest.approx(naive_hscore(f, y), rel=1e-8)
    assert T.knn_loo(f, y) == pytest.approx(naive_knn(f, y, 5))
    assert T.knn_loo(f, y, k=1) == pytest.approx(naive_knn(f, y, 1))


def test_edge_cases() -> None:
    g = torch.Generator().manual_seed(3)
    y = torch.tensor([0, 1] * 10)
    wide = torch.randn(20, 300, generator=g)  # D > N
    for metric in ("logme", "hscore", "knn"):
        assert math.isfinite(score_features(wide, y, metric))
    const = torch.ones(20, 4)
    assert math.isfinite(T.logme(const, y)) and math.isfinite(T.hscore(const, y))
    # Scale invariance of H-score and kNN (a property of their definitions).
    f = torch.randn(20, 4, generator=g)
    assert T.hscore(3 * f, y) == pytest.approx(T.hscore(f, y), rel=1e-6)
    assert T.knn_loo(3 * f, y) == T.knn_loo(f, y)
    bad = f.clone()
    bad[3, 1] = float("nan")
    for metric in ("logme", "hscore", "knn"):
        with pytest.raises(TransferabilityError, match="NaN or Inf.*row 3"):
            score_features(bad, y, metric)
        with pytest.raises(TransferabilityError, match="at least 2 classes"):
            score_features(f, torch.zeros(20, dtype=torch.long), metric)
    with pytest.raises(TransferabilityError, match="classification tasks only"):
        score_features(f, torch.randn(20), "hscore")
    assert math.isfinite(score_features(f, torch.randn(20, 2, generator=g), "logme"))  # regression
    with pytest.raises(TransferabilityError, match="unknown metric 'leep'"):
        score_features(f, y, "leep")
    with pytest.raises(TransferabilityError, match="20 feature rows but 19"):
        T.logme(f, y[:19])
