"""Fit the probe's classifier head on cached backbone features.

The backbone is frozen, so its features are computed once and the head is
trained on them: the cost of head fitting becomes negligible next to one pass of
the backbone. Sampling follows the supplement: every epoch draws a fixed number of
samples with replacement, uniformly over classes, from a seeded generator.

Regression (``regression=True``, float ``N x k`` standardised targets): the head
has ``k`` outputs and is fit with the mean squared error (``nn.MSELoss``, the
unit-variance Gaussian negative log-likelihood up to scale and a constant), with
draws uniform over samples (there are no classes to balance); the stats report
``head_train_r2`` (coefficient of determination on all samples, averaged over the
``k`` outputs) instead of ``head_train_accuracy``.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import HeadConfig
from .data.sampling import balanced_indices


def _r2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over output dimensions of 1 - SSE / SST (SST about each dimension's mean)."""
    pred, target = pred.reshape(target.shape[0], -1).double(), target.reshape(target.shape[0], -1).double()
    sse = (target - pred).square().sum(0)
    sst = (target - target.mean(0)).square().sum(0)
    return float((1.0 - sse / sst).mean())


def fit_head(
    head: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    config: HeadConfig,
    generator: torch.Generator,
    multilabel: bool = False,
    regression: bool = False,
) -> dict[str, float]:
    """Train ``head`` in place (it belongs to the probe's private copy); returns final stats.

    Stats: ``head_final_loss`` (last minibatch) and ``head_train_accuracy``
    (classification) or ``head_train_r2`` (regression).
    """
    if multilabel and regression:
        raise ValueError("a task is either multi-label or regression, not both")
    params = [p for p in head.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    loss_fn: nn.Module
    if regression:
        loss_fn = nn.MSELoss()
    elif multilabel:
        loss_fn = nn.BCEWithLogitsLoss()
    else:
        loss_fn = nn.CrossEntropyLoss()
    features = features.detach().to(torch.float32)
    if regression:
        labels = labels.to(torch.float32).reshape(features.shape[0], -1)
    n = features.shape[0]
    last = float("nan")
    try:
        for _ in range(config.epochs):
            if config.balanced and not regression:
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
            if regression:
                return {"head_final_loss": last, "head_train_r2": _r2(logits, labels)}
            if multilabel:
                acc = float(((logits > 0) == labels.bool()).float().mean())
            else:
                acc = float((logits.argmax(1) == labels).float().mean())
    finally:
        for p, s in zip(params, saved, strict=True):
            p.grad = None
            p.requires_grad_(s)
    return {"head_final_loss": last, "head_train_accuracy": acc}


def fit_dense_head(
    decoder: nn.Module,
    features: torch.Tensor,
    targets: torch.Tensor,
    config: HeadConfig,
    generator: torch.Generator,
    regression: bool,
) -> dict[str, float]:
    """Train a pixel-wise decoder (supplement 1.1) on cached feature maps; left in eval mode.

    ``targets``: ``(N, H, W)`` int64 class ids (per-pixel cross-entropy) or ``(N, k, H, W)``
    standardised floats (per-pixel MSE). Draws are uniform over samples, ``config.dense_draws_per_epoch``
    per epoch: every sample carries H x W labels, so far fewer are needed than for one label each.
    Stats: ``head_final_loss`` and ``head_train_pixel_accuracy`` or ``head_train_r2``.
    """
    opt = torch.optim.Adam(decoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    features = features.detach().to(torch.float32)
    n, last = features.shape[0], float("nan")
    decoder.train()  # BatchNorm learns the decoder's own statistics
    try:
        for _ in range(config.epochs):
            idx = torch.randint(0, n, (config.dense_draws_per_epoch,), generator=generator)
            for start in range(0, len(idx), config.batch_size):
                b = idx[start : start + config.batch_size]
                if len(b) < 2:
                    continue  # BatchNorm needs two samples in training mode
                loss = loss_fn(decoder(features[b]), targets[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = float(loss.detach())
    finally:
        decoder.eval()
        for p in decoder.parameters():
            p.grad = None
            p.requires_grad_(False)
    with torch.no_grad():
        out = torch.cat([decoder(features[i : i + config.batch_size]) for i in range(0, n, config.batch_size)])
    if regression:
        return {"head_final_loss": last, "head_train_r2": _r2(out, targets)}
    return {"head_final_loss": last, "head_train_pixel_accuracy": float((out.argmax(1) == targets).float().mean())}
