"""Distances checked against a naive per-pair implementation and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import IncompatibleEmbeddingError
from t2v_hub.selection import distances as D


def naive_d_sym(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> float:
    a64, b64 = a.double(), b.double()
    u, v = a64 / (a64 + b64 + eps), b64 / (a64 + b64 + eps)
    return float(1 - (u @ v) / (u.norm() * v.norm()))


def test_d_sym_matches_naive_and_is_symmetric() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(50, generator=g), torch.rand(50, generator=g)
    assert D.d_sym(a, b) == pytest.approx(naive_d_sym(a, b), rel=1e-5)
    assert D.d_sym(a, b) == pytest.approx(D.d_sym(b, a), rel=1e-6)
    assert D.d_sym(a, a) == pytest.approx(0.0, abs=1e-6)


def test_d_sym_closed_form_two_filters() -> None:
    # a=(1,0), b=(0,1): u=(1,0), v=(0,1) are orthogonal -> distance 1.
    assert D.d_sym(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])) == pytest.approx(1.0)
    # a=(3,1), b=(1,3): u=(3/4,1/4), v=(1/4,3/4); cos = (3/16+3/16)/(10/16) = 0.6
    assert D.d_sym(torch.tensor([3.0, 1.0]), torch.tensor([1.0, 3.0])) == pytest.approx(0.4, rel=1e-6)


def test_scale_invariance_per_filter() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(20, generator=g), torch.rand(20, generator=g)
    s = torch.logspace(-6, 6, 20)  # per-filter rescaling of both tasks leaves the distance unchanged
    assert D.d_sym(a * s, b * s) == pytest.approx(D.d_sym(a, b), rel=1e-4)


def test_cdist_matches_loop_and_chunks(monkeypatch) -> None:
    g = torch.Generator().manual_seed(2)
    A, B = torch.rand(7, 33, generator=g), torch.rand(5, 33, generator=g)
    ref = torch.tensor([[naive_d_sym(a, b) for b in B] for a in A], dtype=torch.float32)
    assert torch.allclose(D.cdist(A, B), ref, atol=1e-6)
    monkeypatch.setattr(D, "_CHUNK_ELEMENTS", 40)  # force many tiny chunks
    assert torch.allclose(D.cdist(A, B), ref, atol=1e-6)
    P = D.pdist(A)
    assert torch.allclose(P, P.T) and torch.all(P.diagonal() == 0)


def test_dead_filters_give_finite_distances() -> None:
    a = torch.tensor([0.0, 0.0, 1.0, 2.0])
    b = torch.tensor([0.0, 3.0, 0.0, 2.0])
    z = torch.zeros(4)
    vals = [D.d_sym(a, b), D.d_sym(a, z), D.d_sym(z, z)]
    assert all(math.isfinite(v) for v in vals)
    assert D.cdist(torch.stack([a, z]), torch.stack([b, z])).isfinite().all()


def test_asymmetric_formula() -> None:
    g = torch.Generator().manual_seed(3)
    s, t, t0 = (torch.rand(10, generator=g) for _ in range(3))
    expect = naive_d_sym(s, t) - 0.15 * naive_d_sym(s, t0)
    assert D.d_asym(s, t, t0) == pytest.approx(expect, rel=1e-5)
    M = D.cdist_asym(torch.stack([s, t]), torch.stack([t, s]), t0, alpha=0.3)
    assert M[0, 0] == pytest.approx(naive_d_sym(s, t) - 0.3 * naive_d_sym(s, t0), rel=1e-5)
    assert M[1, 0] == pytest.approx(-0.3 * naive_d_sym(t, t0), abs=1e-6)


def test_incompatible_embeddings_raise() -> None:
    a = Task2VecEmbedding.create(torch.rand(4), probe="a", weights_sha256="w", layout_hash="l", method="m")
    b = Task2VecEmbedding.create(torch.rand(4), probe="b", weights_sha256="w", layout_hash="l", method="m")
    with pytest.raises(IncompatibleEmbeddingError, match="probe"):
        D.d_sym(a, b)
    with pytest.raises(IncompatibleEmbeddingError):
        D.cdist([a, b], [a])
