"""The true (Monte Carlo) Fisher with every label drawn up front: shard-invariant.

The probe's predictive distribution for a sample is ``head(features(x))``: the
backbone is frozen and in eval mode, so the caller can compute all logits once
(it has the features from the head fit). All ``mc_samples`` targets of all N
samples are then drawn here from one seeded generator with
:func:`~t2v_hub.fisher.likelihoods.sample_labels`, and each draw runs the exact
per-sample estimator with those targets. Whether the N samples are processed by one
process or split over eight (``shard``), the same sample gets the same targets, and
the per-parameter sums of the shards add up to the single-process sums.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data.rows import ImageRows, take_rows
from ..errors import FisherError
from .likelihoods import LIKELIHOODS, sample_labels
from .persample import estimate_persample
from .result import FisherResult


def estimate_montecarlo_presampled(
    model: nn.Module,
    images: torch.Tensor | ImageRows,
    logits: torch.Tensor,
    *,
    params: list[str] | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    likelihood: str = "categorical",
    shard: torch.Tensor | None = None,
    batch_size: int = 32,
    autocast_dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    progress: bool = False,
    **options: Any,
) -> FisherResult:
    """Monte Carlo Fisher of ``model`` on ``images[shard]``, targets drawn from ``logits`` (all N rows).

    ``logits`` are the model's outputs for every image (``(N, C)``, or ``(N, k)`` means
    for ``likelihood="gaussian"``); drawing for all N rows, then keeping the shard,
    is what makes the result independent of the sharding. Returns the mean over the
    ``mc_samples`` draws of each sample's squared score, with ``sums`` for reduction.
    """
    from ..data.tensors import TensorBatches

    if mc_samples < 1:
        raise FisherError(f"mc_samples must be at least 1, got {mc_samples}")
    if likelihood not in LIKELIHOODS:
        raise FisherError(f"likelihood must be one of {', '.join(LIKELIHOODS)}, got {likelihood!r}")
    if logits.shape[0] != images.shape[0]:
        raise FisherError(f"{logits.shape[0]} rows of logits for {images.shape[0]} images; pass one row per image")
    rows = shard if shard is not None else torch.arange(images.shape[0])
    draws = sample_labels(logits, mc_samples, generator, likelihood)
    sums: dict[str, torch.Tensor] | None = None
    config: dict[str, Any] = {}
    for k in range(mc_samples):
        desc = f"Fisher montecarlo {k + 1}/{mc_samples}" if progress else None
        r = estimate_persample(
            model, TensorBatches(take_rows(images, rows), draws[k][rows], batch_size, desc), method="empirical",
            params=params, likelihood=likelihood, autocast_dtype=autocast_dtype, device=device, **options,
        )
        assert r.sums is not None
        sums = r.sums if sums is None else {n: sums[n] + r.sums[n] for n in sums}
        config = r.config
    assert sums is not None
    sums = {n: v / mc_samples for n, v in sums.items()}  # mean over the draws of each sample
    config = {**config, "method": "montecarlo", "mc_samples": mc_samples,
              "label_sampling": "pipeline: all labels drawn up front from head(features) with the seeded generator"}
    return FisherResult.from_sums(sums, len(rows), "montecarlo", config)


__all__ = ["estimate_montecarlo_presampled"]
