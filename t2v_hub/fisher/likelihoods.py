"""Likelihoods of the Fisher estimators: label sampling and per-sample losses.

``categorical`` (softmax over dim 1; logits ``(B, C)`` or dense ``(B, C, *spatial)``
with the loss summed over positions), ``bernoulli`` (multi-label sigmoid, {0,1}
float targets) and ``gaussian`` (unit-variance regression of outputs of any shape).
The Fisher of each is the expectation of squared per-sample scores of the summed
per-sample negative log-likelihood computed here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import FisherError

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")


def sample_labels(
    logits: torch.Tensor,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    likelihood: str = "categorical",
) -> torch.Tensor:
    """Targets drawn from the model's predictive distribution, one leading axis of ``mc_samples``.

    * ``categorical``: logits ``(B, C)`` -> ``(S, B)`` int64 class ids; dense logits
      ``(B, C, *spatial)`` (a pixel-wise softmax over dim 1) -> ``(S, B, *spatial)``, one
      independent class per pixel.
    * ``bernoulli``: ``(B, C)`` logits -> ``(S, B, C)`` {0,1} floats.
    * ``gaussian``: outputs of any shape are the means of unit-variance Gaussians ->
      ``(S, *shape)`` floats ``f + N(0, 1)``.

    Sampling happens on the generator's device (CPU when ``generator`` is None, then with
    torch's global RNG), in fp32, from detached logits -- so the draws depend only on
    the generator state and the logits, and the estimators and tests can reproduce them.
    """
    where = generator.device if generator is not None else torch.device("cpu")
    lg = logits.detach().to(where, torch.float32)
    if likelihood == "categorical":
        if lg.dim() < 2:
            raise FisherError(f"categorical likelihood needs logits shaped (B, C, ...), got {tuple(lg.shape)}")
        # Class axis last, one row per (sample, pixel); for (B, C) logits this is the plain
        # row-wise draw, so classification draws are unchanged by the dense case.
        rows = lg.movedim(1, -1).reshape(-1, lg.shape[1])
        ids = torch.multinomial(torch.softmax(rows, dim=-1), mc_samples, replacement=True, generator=generator)
        return ids.t().reshape(mc_samples, lg.shape[0], *lg.shape[2:]).contiguous()
    if likelihood == "bernoulli":
        probs = torch.sigmoid(lg).expand(mc_samples, *lg.shape)
        return torch.bernoulli(probs, generator=generator)
    if likelihood == "gaussian":
        noise = torch.randn((mc_samples, *lg.shape), generator=generator, device=where, dtype=torch.float32)
        return lg.unsqueeze(0) + noise
    raise FisherError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def loss_sum(logits: torch.Tensor, target: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Sum over the batch of each sample's negative log-likelihood (fp32, or fp64 for fp64 models).

    A sample's NLL of a dense output is the sum over its pixels (the pixels are independent
    given the input), so the Fisher is that of the joint pixel-wise model. The Gaussian NLL
    drops the constant ``log(2 pi) / 2``, which has no gradient.
    """
    if logits.dtype != torch.float64:
        logits = logits.float()  # autocast logits (bf16/fp16) are upcast before the log-softmax
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(
            logits, target.to(logits.device, logits.dtype), reduction="sum"
        )
    if likelihood == "gaussian":
        return 0.5 * (target.to(logits.device, logits.dtype) - logits).square().sum()
    return F.cross_entropy(logits, target.to(logits.device), reduction="sum")


def draw_targets(
    logits: torch.Tensor,
    y: torch.Tensor | None,
    labels: str,
    mc_samples: int,
    generator: torch.Generator | None,
    likelihood: str,
) -> torch.Tensor:
    """Targets for each draw, leading axis ``S`` (see :func:`sample_labels`); dataset labels give one draw."""
    if labels == "sampled":
        return sample_labels(logits, mc_samples, generator, likelihood)
    if y is None:
        raise FisherError("dataset labels requested (empirical Fisher) but the loader yields no labels")
    if likelihood in ("bernoulli", "gaussian"):
        if y.shape != logits.shape or not y.dtype.is_floating_point:
            raise FisherError(
                f"{likelihood} likelihood needs float y shaped like the outputs {tuple(logits.shape)}, "
                f"got {y.dtype} {tuple(y.shape)}"
            )
        return y.unsqueeze(0)
    want = (logits.shape[0], *logits.shape[2:])
    if y.dtype.is_floating_point or y.dtype == torch.bool or tuple(y.shape) != want:
        kind = "1-D int64 tensor of class ids" if logits.dim() == 2 else "int64 tensor of per-pixel class ids"
        raise FisherError(
            f"categorical likelihood needs y as a {kind} shaped {want} for logits {tuple(logits.shape)}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    return y.unsqueeze(0)
