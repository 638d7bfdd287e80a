"""The reference implementation's estimator: squared *batch* gradients.

The public TASK2VEC code squares the gradient of the batch-MEAN loss. Per batch of
``B`` samples that is ``(1/B sum_i G_i)^2``; with labels sampled from the model the
per-sample scores ``G_i`` have zero mean given ``x_i`` and are independent, so the
cross terms vanish in expectation and ``E[(1/B sum_i G_i)^2] = F / B``: the scale
depends on the batch size. Here each batch contributes ``B`` times its estimate,
``B * (B * mean_grad^2) = (grad of the batch-SUM loss)^2``, and the total is divided
by the number of samples, so

    F_batch = 1/N sum_batches (sum_{i in batch} G_i)^2,     E[F_batch] = F.

It is unbiased only with sampled labels (``labels="sampled"``, the default): with
dataset labels the per-sample scores do not average to zero and the cross terms
``G_i G_j`` survive. Even when unbiased it is far noisier than the per-sample
estimators (each batch gives one squared sum instead of B squares), and it costs a
normal training backward (weight gradients included). It is kept for comparison
with the reference implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import FisherError
from .common import (
    autocast_ctx,
    check_options,
    check_positive,
    iter_batches,
    parse_dtype,
    requires_grad_only,
    resolve_device,
    resolve_params,
    warn_if_training,
)
from .likelihoods import LIKELIHOODS, draw_targets, loss_sum
from .result import FisherResult

BATCH_OPTIONS = ("labels", "likelihood", "max_samples")
BATCH_LABELS = ("sampled", "dataset")


def estimate_batch(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    params: list[str] | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    autocast_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> FisherResult:
    """Squared batch-sum gradients / N (see module docstring); ``mc_samples`` draws are averaged."""
    check_options(options, BATCH_OPTIONS, "batch")
    labels = options.get("labels", "sampled")
    if labels not in BATCH_LABELS:
        raise FisherError(f"labels must be one of {BATCH_LABELS}, got {labels!r}")
    likelihood = options.get("likelihood", "categorical")
    if likelihood not in LIKELIHOODS:
        raise FisherError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    draws = check_positive("mc_samples", mc_samples) if labels == "sampled" else 1
    check_positive("chunk_size", chunk_size, allow_none=True)  # accepted for a uniform API; unused
    max_samples = check_positive("max_samples", options.get("max_samples"), allow_none=True)
    dtype = parse_dtype(autocast_dtype)
    run_model, dev = resolve_device(model, device)
    measured = resolve_params(run_model, params)
    warn_if_training(model)
    weights = [p for _, _, p in measured]
    sums = [torch.zeros(p.shape, dtype=torch.float32, device=dev) for p in weights]

    num_samples = 0
    # Only the measured weights require grad (restored afterwards); autograd.grad returns
    # their gradients without writing .grad.
    with requires_grad_only(run_model, weights), torch.enable_grad():
        for x, y in iter_batches(loader, dev, max_samples):
            with autocast_ctx(dev, dtype):
                logits = run_model(x)
            targets = draw_targets(logits, y, labels, draws, generator, likelihood)
            if weights:
                for s in range(draws):
                    loss = loss_sum(logits, targets[s], likelihood)  # batch SUM = B * batch mean
                    grads = torch.autograd.grad(loss, weights, retain_graph=s < draws - 1, allow_unused=True)
                    for acc, g in zip(sums, grads, strict=True):
                        if g is None:
                            continue
                        if g.dtype == acc.dtype:  # in place: no squared copy of a weight-sized gradient
                            acc.addcmul_(g, g)
                        else:
                            acc.add_(g.float().square())
                    del grads  # before the next backward allocates its own: one set alive at a time
            num_samples += x.shape[0]
    if num_samples == 0:
        raise FisherError("no samples: the loader yielded no batches")
    config = {
        "method": "batch",
        "labels": labels,
        "mc_samples": draws,
        "likelihood": likelihood,
        "chunk_size": chunk_size,
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "device": str(dev),
        "max_samples": max_samples,
        "generator_seed": generator.initial_seed() if generator is not None else None,
        "num_params": len(weights),
        "unbiased": labels == "sampled",
    }
    out = {  # a CPU fp32 sum is handed over as it is (no copy) when there is one draw
        name: (acc / draws if draws > 1 else acc).to("cpu", torch.float32)
        for (name, _, _), acc in zip(measured, sums, strict=True)
    }
    return FisherResult.from_sums(out, num_samples, "batch", config)
