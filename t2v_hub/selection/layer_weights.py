"""MODEL2VEC's per-layer weights (``bias="layer"``): one weight per probe layer, shared by every expert.

The per-expert biases of the supplement (a log-scale per filter and expert, or an offset per
expert) are tied to an expert's identity: trained on some domains they memorise them, and on a
new domain they change nothing or make things worse (``benchmarks/selection_quality.py``,
leave-one-domain-out). A weight per *layer* in the cosine of d_sym,

    d_w(a, b) = 1 - sum_k w_k u_k v_k / sqrt(sum_k w_k u_k^2 * sum_k w_k v_k^2),
    u = a / (a + b), v = b / (a + b),  w_k = exp(theta_layer(k)),

says instead *which layers' Fisher predicts transfer*. It has a few dozen parameters, none of
them an expert's, so it can carry over to tasks and experts of domains no training task came
from. ``theta = 0`` is the paper's d_sym.

Training is cheap: for every (task, expert) pair the three per-layer sums of the cosine
(u.v, u.u, v.v restricted to a layer) are computed once, and the loss of any ``theta`` is
a (tasks x experts x layers) contraction of them.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import SelectorError

_CHUNK_ELEMENTS = 1 << 24  # (rows x experts x dim) elements per chunk of the per-layer sums


def layer_sums(A: torch.Tensor, B: torch.Tensor, layers: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Per-layer (u.v, u.u, v.v) of d_sym for every (row of A, row of B): shape (3, len(A), len(B), L), fp64."""
    out = torch.zeros(3, A.shape[0], B.shape[0], num_layers, dtype=torch.float64)
    rows = max(1, _CHUNK_ELEMENTS // max(1, B.shape[0] * B.shape[1]))
    for i in range(0, A.shape[0], rows):
        a = A[i : i + rows, None].double()
        b = B[None].double()
        s = a + b
        inv = torch.where(s > 0, 1.0 / s.clamp_min(1e-300), torch.zeros((), dtype=s.dtype))
        u, v = a * inv, b * inv
        for c, z in enumerate((u * v, u * u, v * v)):
            out[c, i : i + rows].index_add_(2, layers, z)
    return out


def weighted_from_sums(sums: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """d_w for the pairs whose :func:`layer_sums` are ``sums``, with layer weights ``exp(theta)``."""
    w = theta.exp()
    uv, uu, vv = (sums[c] @ w for c in range(3))
    cos = uv / (uu * vv).clamp_min(1e-300).sqrt()
    return (1.0 - cos).clamp(0.0, 2.0)


def check_layers(layers: torch.Tensor | None, dim: int) -> torch.Tensor:
    if layers is None:
        raise SelectorError("bias='layer' needs layers= (each filter's layer id, shape (dim,)); "
                            "t2v_hub.selection.layer_weights.layer_ids(embedding) gives them")
    ids = torch.as_tensor(layers, dtype=torch.long).reshape(-1)
    if ids.numel() != dim or (ids.numel() and int(ids.min()) < 0):
        raise SelectorError(f"layers must hold one non-negative layer id per filter ({dim}), got {ids.numel()}")
    return ids


def fit_layer_weights(
    X: torch.Tensor, F: torch.Tensor, t0: torch.Tensor, labels: torch.Tensor, known: torch.Tensor,
    layers: torch.Tensor, cfg: Any,
) -> tuple[torch.Tensor, float, list[float]]:
    """(theta per layer, log gamma, loss per epoch): full-batch Adam on the soft-label cross-entropy
    plus ``cfg.layer_decay * |theta|^2`` (theta = 0 is d_sym: the penalty shrinks towards the paper)."""
    from .training import _masked_ce, _masked_std  # the loss and the start of every MODEL2VEC variant

    num_layers = int(layers.max()) + 1
    task_sums = layer_sums(X, F, layers, num_layers)  # (3, T, E, L)
    triv_sums = layer_sums(t0[None], F, layers, num_layers)[:, 0]  # (3, E, L)

    def asym(theta: torch.Tensor) -> torch.Tensor:
        return weighted_from_sums(task_sums, theta) - cfg.alpha * weighted_from_sums(triv_sums, theta)[None]

    theta = torch.zeros(num_layers, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        spread = _masked_std(asym(theta), known).mean().clamp_min(1e-6)
    log_gamma = (-spread.log()).clone().requires_grad_(True)
    opt = torch.optim.Adam([theta, log_gamma], lr=cfg.lr)
    lab = labels.double()
    losses: list[float] = []
    for _ in range(cfg.layer_epochs):
        ce = _masked_ce(asym(theta), lab, known, log_gamma) / X.shape[0]
        loss = ce + cfg.layer_decay * (theta**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(ce.detach()))
    return theta.detach().float(), float(log_gamma.detach()), losses


def layer_ids(embedding: Any) -> torch.Tensor:
    """Each filter's layer id (dim,) for an embedding's probe, from the probe's own layout.

    Builds the probe (no weights are loaded) and checks that its layout is the embedding's.
    """
    from ..config import space_of

    space = space_of(embedding.metadata)
    ids = probe_layer_ids(space.probe, space.input_size, space.include_norm, embedding.metadata.get("layout_hash"))
    if ids.numel() != embedding.dim:
        raise SelectorError(f"the probe {space.probe!r} built here has {ids.numel()} filters, the embeddings "
                            f"{embedding.dim}: other timm version or options; train with bias='filter'")
    return ids


def probe_layer_ids(probe: str, input_size: int | None = None, include_norm: bool = False,
                    layout_hash: str | None = None) -> torch.Tensor:
    """Each filter's layer id (dim,) in ``probe``'s embedding layout; ``layout_hash`` is checked if given."""
    from ..probes import create_probe

    layout = create_probe(probe, num_classes=2, pretrained=False, input_size=input_size,
                          include_norm=include_norm).layout
    if layout_hash and layout.hash() != layout_hash:
        raise SelectorError(f"the probe {probe!r} built here has layout {layout.hash()}, the embeddings "
                            f"{layout_hash}: other timm version or options; train with bias='filter'")
    ids = torch.empty(layout.dim, dtype=torch.long)
    for k, (_, (lo, hi)) in enumerate(layout.offsets().items()):
        ids[lo:hi] = k
    return ids


__all__ = ["check_layers", "fit_layer_weights", "layer_ids", "layer_sums", "probe_layer_ids", "weighted_from_sums"]
