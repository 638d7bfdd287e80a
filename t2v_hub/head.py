"""Fit the probe's classifier head on cached backbone features.

The backbone is frozen, so its features are computed once and the head is
trained on them: the cost of head fitting becomes negligible next to one pass of
the backbone. Sampling follows the supplement: every epoch draws a fixed number of
samples with replacement, uniformly over classes, from a seeded generator.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import HeadConfig
from .data.sampling import balanced_indices


def fit_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: HeadConfig,
    generator: torch.Generator,
    multilabel: bool = False,
) -> dict[str, float]:
    """Train ``head`` in place (it belongs to the probe's private copy); returns final stats."""
    params = [p for p in head.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    features = features.detach().to(torch.float32)
    n = features.shape[0]
    last = float("nan")
    try:
        for _ in range(config.epochs):
            if config.balanced:
                idx = balanced_indices(labels, config.draws_per_epoch, generator)
            else:
                idx = torch.randint(0, n, (config.draws_per_epoch,), generator=generator)
            for start in range(0, len(idx), config.batch_size):
                b = idx[start : start + config.batch_size]
                logits = head(features[b])
                target = labels[b].float() if multilabel else labels[b]
                loss = loss_fn(logits, target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = float(loss.detach())
        with torch.no_grad():
            logits = head(features)
            if multilabel:
                acc = float(((logits > 0) == labels.bool()).float().mean())
            else:
                acc = float((logits.argmax(1) == labels).float().mean())
    finally:
        for p, s in zip(params, saved, strict=True):
            p.grad = None
            p.requires_grad_(s)
    return {"head_final_loss": last, "head_train_accuracy": acc}
