"""Exact per-sample diagonal Fisher: ``montecarlo`` (true Fisher) and ``empirical``.

F_jj = 1/N sum_i E_{y ~ p(y|x_i)} [ (d/dw_j  -log p(y|x_i))^2 ]

``montecarlo`` draws ``mc_samples`` labels per input from the model's own predictive
distribution (the true Fisher); ``empirical`` uses the dataset labels.

How it is computed without a loop over samples and without touching the model:

1. Every parameter of the model is temporarily frozen (``requires_grad=False``,
   flags restored in ``finally``) and the *input* batch is made to require grad.
   The autograd graph then contains activations only, so backward computes
   output gradients and no parameter gradient at all: nothing is written to
   ``.grad`` and the weight-gradient GEMMs of a training step are skipped.
2. A forward hook on each measured module keeps its input and registers a tensor
   hook on its output. Tensor hooks receive the gradient w.r.t. the output *as it
   was produced*, even when a later in-place op (``ReLU(inplace=True)``, ``x += s``)
   rewrote that tensor -- asking ``autograd.grad`` for the output tensor itself
   would silently return the gradient after the in-place op.
3. Because the summed loss is a sum of per-sample losses and samples do not interact
   (eval mode), row ``i`` of an output gradient is sample ``i``'s own gradient, and
   :mod:`.linear` / :mod:`.conv` turn (input, output-gradient) into
   ``sum_i G_i**2`` with batched matmuls, in fp32 even under autocast.
4. ``mc_samples`` draws share one forward; each draw is one backward pass
   (``retain_graph``).

Layers called several times in one forward (weight sharing) keep their gradients
until the backward pass ends, then sum the per-call per-sample gradients before
squaring, which is what the per-sample gradient of a shared weight is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import FisherError
from ._tap import Tap as _Tap
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
from .conv import CONV_BACKENDS
from .functional import FunctionalLinear as _FunctionalLinear
from .functional import calls_linear as _calls_linear
from .likelihoods import LIKELIHOODS, draw_targets, loss_sum
from .linear import DEFAULT_PAIRWISE_MAX, default_chunk_bytes
from .result import FisherResult

PERSAMPLE_OPTIONS = ("conv_backend", "filter_means", "likelihood", "max_samples", "pairwise_max_positions")

def _check_unused(
    model: nn.Module, taps: list[_Tap], x: torch.Tensor, dtype: torch.dtype | None
) -> tuple[list[str], list[_Tap]]:
    """Never-called layers: those whose weight does not affect the output (Fisher 0), and the
    Linear layers whose weight is used by a direct ``F.linear`` call instead.

    timm's BEiT/EVA attention calls ``F.linear(x, self.qkv.weight, bias)`` with a bias it
    assembles itself: that use is caught by :class:`_FunctionalLinear` from then on. Any
    other layer whose weight is used outside its module's ``forward`` (a convolution, or
    ``nn.MultiheadAttention``'s packed projection via its own kernels) is an error.
    """
    silent = [t for t in taps if not t.inputs]
    if not silent:
        return [], []
    for t in taps:
        t.active = False
    try:
        weights = [t.module.weight for t in silent]
        with requires_grad_only(model, weights), torch.enable_grad():
            with autocast_ctx(x.device, dtype):
                out = model(x)
            if out.requires_grad:
                grads = torch.autograd.grad(out.float().sum(), weights, allow_unused=True)
            else:  # none of them reaches the output
                grads = (None,) * len(weights)
    finally:
        for t in taps:
            t.active = True
            t.reset()
    used = [t for t, g in zip(silent, grads, strict=True) if g is not None]
    # nn.MultiheadAttention runs its projections sequence-first (and on its fast path not through
    # F.linear at all): its out_proj stays an error, not a functional linear.
    mha = {id(m.out_proj) for m in model.modules() if isinstance(m, nn.MultiheadAttention)}
    for t in taps:
        t.active = False
    try:
        candidates = [t for t in used if t.spec is None and not t.norm and id(t.module) not in mha]
        functional = _calls_linear(model, x, dtype, candidates) if candidates else []
    finally:
        for t in taps:
            t.active = True
            t.reset()
    others = [t.name for t in used if t not in functional]
    if others:
        raise FisherError(
            f"parameters {others} affect the output but their module's forward is never called "
            "(e.g. nn.MultiheadAttention uses out_proj.weight directly); leave them out of `params`, or use "
            "method='batch' (the reference's estimator, any layer)."
        )
    return [t.name for t, g in zip(silent, grads, strict=True) if g is None], functional


# ----------------------------------------------------------------------------- estimator


def estimate_persample(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    method: str,
    params: list[str] | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    autocast_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> FisherResult:
    """``montecarlo`` (sampled labels) or ``empirical`` (dataset labels) per-sample Fisher."""
    check_options(options, PERSAMPLE_OPTIONS, method)
    labels = "sampled" if method == "montecarlo" else "dataset"
    draws = check_positive("mc_samples", mc_samples) if labels == "sampled" else 1
    chunk_size = check_positive("chunk_size", chunk_size, allow_none=True)
    max_samples = check_positive("max_samples", options.get("max_samples"), allow_none=True)
    pairwise_max = int(options.get("pairwise_max_positions", DEFAULT_PAIRWISE_MAX))
    likelihood = options.get("likelihood", "categorical")
    if likelihood not in LIKELIHOODS:
        raise FisherError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    requested_backend = options.get("conv_backend", "auto")
    if requested_backend not in CONV_BACKENDS:
        raise FisherError(f"conv_backend must be one of {CONV_BACKENDS}, got {requested_backend!r}")
    dtype = parse_dtype(autocast_dtype)
    run_model, dev = resolve_device(model, device)
    measured = resolve_params(run_model, params)
    warn_if_training(model)

    chunk_bytes = default_chunk_bytes(dev)
    settings = {
        "filter_means": bool(options.get("filter_means", False)),
        "chunk_size": chunk_size,
        "conv_backend": requested_backend,
        "pairwise_max": pairwise_max,
        "chunk_bytes": chunk_bytes,
    }
    taps = []
    for name, module, weight in measured:
        taps.append(_Tap(name, module, weight, settings))

    num_samples, unused = _run(run_model, loader, taps, dev, dtype, max_samples, labels, draws, generator, likelihood)
    if num_samples == 0:
        raise FisherError("no samples: the loader yielded no batches")

    sums = {}
    for t in taps:  # one layer at a time: a sum on the CPU in fp32 is kept as it is, not copied
        total = t.take()
        sums[t.name] = (total / draws if draws > 1 else total).to("cpu", torch.float32)
    config = {
        "method": method,
        "labels": labels,
        "mc_samples": draws,
        "likelihood": likelihood,
        "chunk_size": chunk_size,
        "chunk_bytes": chunk_bytes if chunk_size is None else None,
        "conv_backend": requested_backend,  # "auto" is resolved per layer (conv.pick_backend)
        "filter_means": settings["filter_means"],  # True: some conv entries are filter means, broadcast
        "pairwise_max_positions": pairwise_max,
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "device": str(dev),
        "max_samples": max_samples,
        "generator_seed": generator.initial_seed() if generator is not None else None,
        "num_params": len(taps),
        "unused_params": unused,
    }
    return FisherResult.from_sums(sums, num_samples, method, config)


def _run(
    run_model: nn.Module, loader: Iterable[Any], taps: list[_Tap], dev: torch.device, dtype: torch.dtype | None,
    max_samples: int | None, labels: str, draws: int, generator: torch.Generator | None, likelihood: str,
) -> tuple[int, list[str]]:
    """The pass over the data: per batch one forward, then one backward per label draw (hooks accumulate)."""
    num_samples = 0
    unused: list[str] = []
    mode: _FunctionalLinear | None = None  # set on the first batch when a weight is used via F.linear
    handles = []
    try:
        with requires_grad_only(run_model, []), torch.enable_grad():
            handles = [t.module.register_forward_hook(t.forward_hook) for t in taps]
            for batch_index, (x, y) in enumerate(iter_batches(loader, dev, max_samples)):
                if not x.dtype.is_floating_point:
                    raise FisherError(f"inputs must be floating point images, got {x.dtype}")
                x_in = x.detach().requires_grad_(True)  # a new tensor: the caller's batch is untouched
                with autocast_ctx(dev, dtype), (mode or contextlib.nullcontext()):
                    logits = run_model(x_in)
                if batch_index == 0:
                    unused, functional = _check_unused(run_model, taps, x, dtype)
                    mode = _FunctionalLinear(functional) if functional else None
                    if unused or functional:  # the check consumed the hooks' captures: redo the forward
                        with autocast_ctx(dev, dtype), (mode or contextlib.nullcontext()):
                            logits = run_model(x_in)
                _check_captures(taps, x.shape[0])
                targets = draw_targets(logits, y, labels, draws, generator, likelihood)
                if taps:
                    for s in range(draws):
                        for t in taps:
                            t.last_draw = s == draws - 1
                        loss = loss_sum(logits, targets[s], likelihood)
                        torch.autograd.grad(loss, [x_in], retain_graph=s < draws - 1, allow_unused=True)
                        for t in taps:
                            t.flush()
                for t in taps:
                    t.reset()
                num_samples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        for t in taps:
            t.reset()
    return num_samples, unused


def _check_captures(taps: list[_Tap], batch: int) -> None:
    for t in taps:
        if t.constant_output:
            raise FisherError(
                f"the output of {t.name!r} does not depend on the input batch (or runs under no_grad); "
                "its per-sample Fisher is undefined here. Leave it out of `params`, or use method='batch'."
            )
        t.fold = 1
        for a in t.inputs:
            if a.shape[0] == batch:
                continue
            if not t.norm and a.dim() >= 3 and a.shape[0] % batch == 0:
                # timm folds with the batch outermost: window_partition's (B * nW, N, C), TNT's
                # (B * patches, C, p, p), MViTv2's pooling over (B * heads, C, H, W). Regrouping rows
                # per sample is exact then (tested against per-sample loops on Swin and TNT).
                t.fold = a.shape[0] // batch
                continue
            raise FisherError(
                f"{t.name!r} received an input with leading dim {a.shape[0]} for a batch of {batch}; the "
                "per-sample estimators need batch-first layers: use method='batch' (the reference's "
                "estimator, any layout) for this model"
            )
