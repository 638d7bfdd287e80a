"""Ground truth: test error of a linear classifier on each expert's frozen features, for every task.

All experts of one task are trained together as a batch of independent linear heads
(``(E, D, C)`` weights, one ``baddbmm`` per step) on the same class-balanced draws,
so the cost is one small matmul per step whatever the number of experts.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from t2v_hub.data import balanced_indices

from ..logme import logme
from .configs import GroundTruthConfig


def linear_probe_errors(
    train_x: torch.Tensor,  # (E, N, D)
    train_y: torch.Tensor,  # (N,)
    test_x: torch.Tensor,  # (E, M, D)
    test_y: torch.Tensor,  # (M,)
    num_classes: int,
    cfg: GroundTruthConfig,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(test error, train accuracy) per expert. Adam, class-balanced draws, zero-initialised heads."""
    E, _, D = train_x.shape
    g = torch.Generator().manual_seed(seed)
    W = torch.zeros(E, D, num_classes, requires_grad=True)
    b = torch.zeros(E, 1, num_classes, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(cfg.epochs):
        idx = balanced_indices(train_y, cfg.draws_per_epoch, g)
        for s in range(0, len(idx), cfg.batch_size):
            j = idx[s : s + cfg.batch_size]
            logits = torch.baddbmm(b, train_x[:, j], W)  # (E, B, C)
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, num_classes), train_y[j].repeat(E), reduction="mean"
            ) * E  # sum over experts of each expert's mean loss: independent problems
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        err = (torch.baddbmm(b, test_x, W).argmax(-1) != test_y[None]).float().mean(1)
        acc = (torch.baddbmm(b, train_x, W).argmax(-1) == train_y[None]).float().mean(1)
    return err.numpy().astype(np.float64), acc.numpy().astype(np.float64)


def logme_scores(train_x: torch.Tensor, train_y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """LogME of each expert's features (E, N, D) for the labels; and seconds per expert."""
    scores, secs = [], []
    y = train_y.numpy()
    for e in range(train_x.shape[0]):
        t0 = time.perf_counter()
        scores.append(logme(train_x[e].double().numpy(), y))
        secs.append(time.perf_counter() - t0)
    return np.array(scores), np.array(secs)


def transfer_scores(train_x: torch.Tensor, train_y: torch.Tensor) -> dict[str, list[float]]:
    """H-score and leave-one-out 5-NN accuracy of each expert's features (E, N, D) (the library's own)."""
    from t2v_hub.selection.transferability import hscore, knn_loo

    y = train_y.long()
    return {"hscore": [hscore(train_x[e].double(), y) for e in range(train_x.shape[0])],
            "knn": [knn_loo(train_x[e].double(), y) for e in range(train_x.shape[0])]}
