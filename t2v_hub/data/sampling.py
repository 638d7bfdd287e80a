"""Class-balanced draws for head fitting (supplement 4.1: every epoch draws
10,000 samples with replacement, uniformly over classes)."""

from __future__ import annotations

import torch

from ..constants import HEAD_DRAWS_PER_EPOCH
from ..errors import DataError


def balanced_indices(
    labels: torch.Tensor, num_draws: int = HEAD_DRAWS_PER_EPOCH, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``num_draws`` sample indices drawn with replacement, uniformly over classes.

    Single-label (1-D ``labels``): a class is drawn uniformly among the classes
    that have samples, then a sample uniformly within it, so rare classes are
    seen as often as frequent ones. Multi-label (N x C): classes overlap, so
    draws are uniform over samples. Deterministic for a given ``generator``
    (a generator seeded with 0 when None).
    """
    if num_draws < 0:
        raise DataError(f"num_draws must be >= 0, got {num_draws}")
    n = labels.shape[0] if labels.ndim else 0
    if n == 0:
        raise DataError("cannot draw from an empty label set")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    if labels.ndim == 2:
        return torch.randint(n, (num_draws,), generator=generator, dtype=torch.int64)
    if labels.ndim != 1:
        raise DataError(
            f"labels must be 1-D class ids or an N x C multi-hot matrix, got shape {tuple(labels.shape)}"
        )
    # Group sample indices by class: order[offsets[c] : offsets[c] + counts[c]] are class c's samples.
    order = torch.argsort(labels, stable=True)
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    offsets = torch.cumsum(counts, 0) - counts
    cls = torch.randint(len(counts), (num_draws,), generator=generator)
    within = (torch.rand(num_draws, generator=generator, dtype=torch.float64) * counts[cls]).long()
    # rand < 1 keeps within < count; min() guards the float edge case anyway.
    within = torch.minimum(within, counts[cls] - 1)
    return order[offsets[cls] + within]
