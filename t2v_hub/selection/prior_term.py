"""d_asym for variational embeddings: each expert's own learned prior is its trivial embedding.

A variational embedding stores ``Ĥ = (β/2)(Λ - λ²)⁺`` per filter, the curvature its task adds
*beyond* the prior ``λ²`` it learned (one precision per layer, recorded as
``method_config["prior_precision_per_layer"]``). The probe's t0 of that estimator is close to
0, so the usual trivial term is inert. The reference code's convention makes it useful: compare
precisions ``P = Ĥ + (β/2)λ²`` and take each task's own prior ``(β/2)λ²`` as its t0. Then

    d_asym(expert -> target) = d_sym(P_expert, P_target) - alpha * d_sym(P_expert, t0_expert)

and the second term measures how far the expert's task lifted its precisions above its own prior
(the supplement's "complexity": a richer task lies farther from its trivial embedding). Measured
on the zoo's 36 tasks in ``benchmarks/variational_selection.py``; the default alpha is
:data:`t2v_hub.constants.VARIATIONAL_ASYM_ALPHA`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..embedding import Task2VecEmbedding
from ..errors import RecommendError
from .distances import paired_sym
from .layer_weights import layer_ids

__all__ = ["has_learned_prior", "layer_prior", "precision_view", "prior_distances"]


def has_learned_prior(e: Task2VecEmbedding) -> bool:
    """Whether ``e`` is a variational embedding that records its prior (and beta)."""
    if e.method != "variational":
        return False
    try:
        mc = e.config("method_config") or {}
    except (KeyError, ValueError):  # no or unreadable config: treat as a plain embedding
        return False
    return isinstance(mc, dict) and "prior_precision_per_layer" in mc and "beta" in mc


def layer_prior(e: Task2VecEmbedding, layers: torch.Tensor) -> torch.Tensor:
    """``(beta/2) lambda^2`` of one variational embedding, per probe layer (checked against ``layers``)."""
    mc = e.config("method_config")
    prior = torch.as_tensor(mc["prior_precision_per_layer"], dtype=torch.float32).reshape(-1)
    n_layers = int(layers.max()) + 1 if layers.numel() else 0
    if prior.numel() != n_layers or not bool(torch.isfinite(prior).all()) or bool((prior <= 0).any()):
        raise RecommendError(f"{e.metadata.get('dataset_id', 'an embedding')}: its recorded prior has "
                             f"{prior.numel()} per-layer precisions for {n_layers} probe layers, or non-positive "
                             "ones; re-embed it with this version (or pass alpha=0)")
    return 0.5 * float(mc["beta"]) * prior


def precision_view(e: Task2VecEmbedding, layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, t0)`` of one variational embedding: its precisions and its own prior, per filter."""
    t0 = layer_prior(e, layers)[layers]
    return e.vector.float() + t0, t0


def prior_distances(target: Task2VecEmbedding,
                    experts: Sequence[Task2VecEmbedding]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(d_sym(P_e, P_target), d_sym(P_e, t0_e))`` for every expert, shape (n,) each."""
    layers = layer_ids(target)
    p_target, _ = precision_view(target, layers)
    views = [precision_view(e, layers) for e in experts]
    P = torch.stack([p for p, _ in views])
    T0 = torch.stack([t for _, t in views])
    return paired_sym(P, p_target.expand_as(P)), paired_sym(P, T0)
