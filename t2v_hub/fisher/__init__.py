"""Diagonal Fisher information of a probe's backbone weights (the TASK2VEC statistic).

``estimate(model, loader, method=...)`` returns a :class:`FisherResult` whose
``per_param`` tensors are shaped like the measured weights; the embedding is
``build_layout(model).reduce(result.per_param)``.

Methods:

* ``montecarlo`` (default): exact per-sample squared scores with labels sampled
  from the model (the true Fisher), ``mc_samples`` draws per input;
  :func:`estimate_montecarlo_presampled` draws every label up front from given logits
  (shard-invariant: what the pipeline uses).
* ``empirical``: the same with the dataset labels (empirical Fisher).
* ``batch``: the reference code's squared batch gradients, rescaled to be
  unbiased with sampled labels; noisier (see :mod:`.batch`).
* ``variational``: the robust Fisher of the supplement, section 6 (:mod:`.variational`).

Floor 1: imports ``errors``, ``constants``, ``probes.layout`` and ``data.tensors``;
never the pipeline, ``selection`` or ``cli``. Estimators return ``dict[str, Tensor]``
(in a :class:`FisherResult`) and never mutate the model they measure.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..constants import DEFAULT_FISHER_METHOD, FISHER_METHODS
from ..errors import FisherError
from .batch import estimate_batch
from .likelihoods import sample_labels
from .montecarlo import estimate_montecarlo_presampled
from .persample import estimate_persample
from .result import FisherResult

__all__ = ["FISHER_METHODS", "FisherResult", "estimate", "estimate_montecarlo_presampled", "sample_labels"]


def estimate(
    model: nn.Module,
    loader: Iterable[Any],
    method: str = DEFAULT_FISHER_METHOD,
    *,
    params: list[str] | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    autocast_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> FisherResult:
    """Diagonal Fisher of ``params`` (default: the probe's filter weights, head excluded).

    ``model(x)`` must return logits and be in eval mode; it is never mutated (no
    ``.grad``, no state change, hooks and ``requires_grad`` flags restored).
    ``loader`` yields ``(x, y)`` batches. Results are fp32 on the CPU.

    Args:
        method: one of ``FISHER_METHODS``.
        params: parameter names (Conv1d/2d/3d incl. grouped/depthwise/``Conv2dSame``, Linear).
        mc_samples: label draws per input (sampled-label methods).
        generator: RNG for the label draws (reproducible; see :func:`sample_labels`).
        chunk_size: samples per chunk of per-sample gradients (default: chunks of ~32 MB on CPU,
            cache-friendly, and ~256 MB on accelerators).
        autocast_dtype: bf16/fp16 autocast for the forward; squares are accumulated in fp32.
        device: where to run (default: the model's device; another device runs on a copy).
        options: ``conv_backend`` ("auto" | "grouped" | "unfold"), ``likelihood``
            ("categorical": softmax over dim 1 of ``(B, C)`` logits, or of dense ``(B, C, *spatial)``
            logits with ``(B, *spatial)`` int64 targets, a sample's loss summed over its pixels;
            "bernoulli": multi-label sigmoid with {0,1} float targets; "gaussian": unit-variance
            regression of outputs of any shape, NLL ``0.5 * sum (y - f)^2``, float targets),
            ``max_samples`` (exact cap), ``pairwise_max_positions`` (see :mod:`.linear`),
            ``filter_means`` (per-sample methods: where it is cheaper, a conv weight's entry holds
            each filter's exact mean broadcast to the weight's shape instead of the diagonal
            itself -- all an embedding keeps; 2-4x less work for ResNets' later stages),
            ``labels`` ("sampled" | "dataset", batch method only); variational options
            are passed through to it.
    """
    # Named here, not as "'int' object is not iterable" or "'str' object has no attribute 'device'".
    if params is not None and (isinstance(params, str) or not isinstance(params, (list, tuple))
                               or not all(isinstance(n, str) for n in params)):
        raise FisherError(f"params={params!r}: expected a list of parameter names, or None for the probe's filters")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise FisherError(f"generator={generator!r}: expected a torch.Generator, or None")
    if method in ("montecarlo", "empirical"):
        return estimate_persample(
            model,
            loader,
            method=method,
            params=params,
            mc_samples=mc_samples,
            generator=generator,
            chunk_size=chunk_size,
            autocast_dtype=autocast_dtype,
            device=device,
            **options,
        )
    if method == "batch":
        return estimate_batch(
            model,
            loader,
            params=params,
            mc_samples=mc_samples,
            generator=generator,
            chunk_size=chunk_size,
            autocast_dtype=autocast_dtype,
            device=device,
            **options,
        )
    if method == "variational":
        # Lazy: the variational estimator is heavier and optional at import time.
        from .variational import estimate_variational

        # Settings that are not None are forwarded so that the caller's choice is not dropped.
        extra = {
            k: v
            for k, v in (("autocast_dtype", autocast_dtype), ("device", device), ("chunk_size", chunk_size))
            if v is not None
        }
        return estimate_variational(model, loader, params=params, generator=generator, **extra, **options)
    raise FisherError(f"unknown Fisher method {method!r}; valid methods: {', '.join(FISHER_METHODS)}")
