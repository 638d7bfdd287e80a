"""A Gauss-Newton fixed point for the variational Fisher: the slope from curvature, not from noise.

What it estimates
-----------------
The closed-form step of :mod:`._variational_fixed_point` needs, for every filter, the slope
``g_f = ∂E/∂s_f`` of the expected loss ``E(s) = E_{w~N(ŵ,Σ)}[loss(w)]`` in the filter's
variance. Under the local reparametrisation (:mod:`.variational`) each output ``o_{fp}``
(filter ``f``, position ``p``) carries noise of variance ``s_f e_{fp}``, with ``e_{fp} =
op(x² + floor, 1)`` its input energy, so Stein's lemma (Price's theorem) gives exactly::

    g_f = ½ Σ_p E[ e_{fp} ∂²loss/∂o_{fp}² ]          (mean over the batch)

The fixed point estimates this *pathwise*, from ``∂loss/∂o · ε``; the noise enters that
estimate at first order, and on real probes most filters' estimates come out negative
(BENCHMARKS.md, "Variational convergence"). Here the second derivative is taken directly, in
its Gauss-Newton form: ``∂²loss/∂o² ≈ Jᵀ H_z J`` with ``J = ∂z/∂o`` (``z`` the network's
outputs) and ``H_z`` the loss's Hessian in ``z``, evaluated under the same output noise. The
term dropped, ``Σ_k ∂loss/∂z_k ∂²z_k/∂o²``, is zero wherever the network after ``o`` is
piecewise linear in ``o`` (ReLU/ReLU6 networks with eval-mode BatchNorm: lite0, ResNets,
away from the kinks), and it is the term the supplement drops too when it expands the loss
around a minimum with the Fisher as its Hessian. The iteration is then the variational
Gauss-Newton fixed point (Khan et al. 2018, "Fast and scalable Bayesian deep learning by
weight-perturbation in Adam"): ``Λ_f = λ² + 4 g_f / (β n)`` with ``g_f ≥ 0`` by construction.

Each batch runs as an antithetic pair (noise ``ε`` and ``−ε``, ``ANTITHETIC``). The diagonal
``Jᵀ H_z J`` comes from one backward pass, by a factorisation of ``H_z``:

* categorical (softmax cross-entropy): a label drawn from the model's own noisy predictive,
  ``u = p − onehot(ŷ)``, has ``E[u uᵀ] = diag(p) − p pᵀ = H_z``, so ``E[(Jᵀu)²] = diag(Jᵀ H_z J)``
  (the true Fisher at the noisy weights, as :mod:`.montecarlo` draws it);
* bernoulli (multi-label sigmoid): ``u = σ(z) − ŷ`` with ``ŷ ~ Bernoulli(σ(z))``;
* any other ``loss_fn``: a Rademacher vector ``r`` and ``H_z r`` (double backward through the
  loss only), ``E[(Jᵀr) ⊙ (Jᵀ H_z r)] = diag(Jᵀ H_z J)``: two backward passes, unbiased, exact in
  one step when ``H_z`` is diagonal and ``J`` constant (a loss quadratic in the outputs of the
  measured layer, as in the closed-form tests).

Up to ``EXACT_CLASSES`` classes the label expectation is summed exactly instead of drawn (one
backward per class): on Fashion-MNIST tops (4 classes) two seeds end 0.102 apart instead of
0.135 with one draw (montecarlo: 0.092), for 1.8x the time.

Averaging. When the step count ``T`` is known (``steps``, or a sized loader), step ``t``'s
estimate enters the running average with weight ``min(t, T + 1 − t)``: a tent. Rising, it
forgets the first steps (taken at the start's noise scale) as ``O(1/t²)``. Falling, it lets the
last steps barely move the estimate, as a step size annealed to 0 at the end of the budget.
Over 2 passes of ``B`` batches every batch gets the same total weight (``b`` in the first pass,
``B + 1 − b`` in the second), so the data are weighted uniformly. Measured on Fashion-MNIST tops
(BENCHMARKS.md, "Variational convergence"), the tent brings the late share from 0.011 to 0.003
at the same seed-to-seed distance (0.070-0.072). Without a step count, the weights are ∝ step
index over the first pass and a plain running mean after. With antithetic pairs, that
fallback gives late share 0.011. Without them, a step-index weighting throughout gives 0.026.

Tried and not kept: a per-batch table of slopes (SAG). Without common random numbers across
passes it gives late share 0.013-0.028. With them and antithetic pairs it gives 0.0096-0.0098,
but seeds end 0.094 apart instead of 0.070: the run settles on a sample-average problem whose
own error is larger. No line search is needed: every step is a closed-form minimiser under a
slope that is PSD and whose noise is a label's or the data's, not ``1/√v``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._variational_fixed_point import _nonpositive, closed_form_update
from ._variational_layers import VarLayer
from ._variational_run import LossFn, Tracker, _batches, _total_steps, check_step, unpack

__all__ = ["curvature_factor", "gauss_newton_slopes", "optimise_gauss_newton"]

Record = list[tuple[int, Tensor, Tensor]]
# (z, targets, mean loss, generator) -> (u, v): vectors in z's shape with E[(Jᵀu) ⊙ (Jᵀv)] = diag(Jᵀ H_z J).
Factor = Callable[[Tensor, Tensor, Tensor, torch.Generator | None], list[tuple[Tensor, Tensor | None]]]
# Each batch runs twice, with output noise ε and −ε (the antithetic pair): the curvature's
# first-order dependence on ε cancels. On Fashion-MNIST tops it brings two seeds from d_sym 0.094
# to 0.070 (montecarlo: 0.092) and the late share from 0.014 to 0.011, for 1.7x the time.
ANTITHETIC = True
EXACT_CLASSES = 16  # up to this many classes the label expectation is summed exactly (one backward per class)


def _categorical(z: Tensor, y: Tensor, data: Tensor, gen: torch.Generator | None) -> list[tuple[Tensor, None]]:
    with torch.no_grad():
        p = z.detach().softmax(dim=1)
        classes = p.shape[1]
        scale = (p.numel() / classes) ** -0.5  # cross_entropy averages over every position but the classes
        if classes <= EXACT_CLASSES:
            # Σ_c p_c (p − e_c)(p − e_c)ᵀ = diag(p) − p pᵀ: the label expectation, without draws.
            eye = torch.eye(classes, dtype=p.dtype, device=p.device).view(classes, 1, classes, *([1] * (p.dim() - 2)))
            return [(scale * p[:, c : c + 1].sqrt() * (p - eye[c]), None) for c in range(classes)]
        flat = p.movedim(1, -1).reshape(-1, classes)
        drawn = torch.multinomial(flat, 1, generator=gen).squeeze(1)
        onehot = F.one_hot(drawn, classes).to(p.dtype).reshape(*p.movedim(1, -1).shape).movedim(-1, 1)
        return [(scale * (p - onehot), None)]


def _bernoulli(z: Tensor, y: Tensor, data: Tensor, gen: torch.Generator | None) -> list[tuple[Tensor, None]]:
    with torch.no_grad():
        p = z.detach().sigmoid()
        drawn = torch.bernoulli(p, generator=gen)
        return [((p - drawn) / z.shape[0] ** 0.5, None)]  # summed over labels, averaged over the batch


def _rademacher(z: Tensor, y: Tensor, data: Tensor, gen: torch.Generator | None) -> list[tuple[Tensor, Tensor]]:
    r = torch.randint(0, 2, z.shape, generator=gen, device=z.device).to(z.dtype) * 2 - 1
    (grad,) = torch.autograd.grad(data, z, create_graph=True)
    (hr,) = torch.autograd.grad(grad, z, grad_outputs=r, retain_graph=True)
    return [(r, hr.detach())]


def curvature_factor(likelihood: str, custom_loss: bool) -> Factor:
    """How ``H_z`` is factorised: label draws for the built-in likelihoods, Rademacher otherwise."""
    if custom_loss:
        return _rademacher
    return {"categorical": _categorical, "bernoulli": _bernoulli}[likelihood]


def gauss_newton_slopes(layers: list[VarLayer], record: Record, z: Tensor,
                        pairs: list[tuple[Tensor, Tensor | None]]) -> list[Tensor]:
    """One batch's ``ĝ_f = ½ Σ_pairs Σ e ⊙ (Jᵀu) ⊙ (Jᵀv)`` per filter (``v = u`` when None)."""
    outs = [noisy for _, noisy, _ in record]
    slopes = [torch.zeros_like(layer.log_prec.detach()) for layer in layers]
    for u, v in pairs:
        a = torch.autograd.grad(z, outs, grad_outputs=u, retain_graph=True, allow_unused=True)
        b = a if v is None else torch.autograd.grad(z, outs, grad_outputs=v, retain_graph=True, allow_unused=True)
        for (i, noisy, energy), ga, gb in zip(record, a, b, strict=True):
            if ga is None or gb is None:
                continue  # this call's output does not reach the loss
            fdim = noisy.dim() - 1 if isinstance(layers[i].module, nn.Linear) else 1
            prod = (energy * ga * gb).movedim(fdim, 0)
            slopes[i] += 0.5 * prod.reshape(prod.shape[0], -1).sum(dim=1)
    return slopes


class _Average:
    """The weights of the running slope average (module doc, "Averaging")."""

    def __init__(self, total: int | None) -> None:
        self.total, self.wsum = total, 0.0

    def rho(self, epoch: int, t: int) -> float:
        """Update weight of step ``t`` (1-based): ``ḡ ← ḡ + rho (ĝ_t − ḡ)``."""
        if self.total:  # the tent min(t, T + 1 - t), normalised
            w = float(min(t, self.total + 1 - t))
            self.wsum += w
            return w / self.wsum
        return 2.0 / (t + 1) if epoch == 0 else 1.0 / t  # ∝ t in the first pass, then a plain mean


def optimise_gauss_newton(work: nn.Module, loader: Iterable[Any], epochs: int, steps: int | None,
                          layers: list[VarLayer], loss: LossFn, factor: Factor, beta: float, learn_prior: bool,
                          head_params: list[nn.Parameter], head_lr: float, track: Tracker, device: torch.device,
                          noise_gen: torch.Generator | None, record: Record) -> tuple[int, dict[str, Any]]:
    """The closed-form step under Gauss-Newton slopes (module doc); ``record`` is filled by the noise hooks.

    Returns the samples of the first pass and the diagnostics the fixed point records (share
    of slopes <= 0, expected loss at the first step and over the last 10% of the steps).
    """
    head_opt = torch.optim.Adam(head_params, lr=head_lr) if head_params else None
    slopes = [torch.zeros_like(layer.log_prec.detach()) for layer in layers]
    average = _Average(_total_steps(loader, epochs, steps))
    num_samples = 0
    stats: dict[str, Any] = {}
    losses: list[float] = []
    for epoch, batch in _batches(loader, epochs, steps):
        x, y = unpack(batch, device)
        if epoch == 0:
            num_samples += int(x.shape[0])
        if ANTITHETIC:  # the noise hooks give the second copy −ε (install_noise(antithetic=True))
            x, y = torch.cat([x, x]), torch.cat([y, y])
        record.clear()
        z = work(x).float()
        data = loss(z, y)
        check_step(data, layers, track.steps_done)
        head_grads = torch.autograd.grad(data, head_params, retain_graph=True) if head_opt is not None else ()
        g_hat = gauss_newton_slopes(layers, record, z, factor(z, y, data, noise_gen))
        record.clear()  # release the batch's activations before the next forward
        rho = average.rho(epoch, track.steps_done + 1)
        for i in range(len(layers)):
            slopes[i] += rho * (g_hat[i] - slopes[i])
        closed_form_update(layers, slopes, beta, learn_prior)
        losses.append(float(data.detach()))
        if track.steps_done == 0:
            stats["nonpositive_slope_first_step"] = _nonpositive(slopes)
        if head_opt is not None:
            for p, g in zip(head_params, head_grads, strict=True):
                p.grad = g
            head_opt.step()
        track.step()
    stats["nonpositive_slope_end"] = _nonpositive(slopes)
    stats["antithetic"] = ANTITHETIC
    tail = losses[-max(len(losses) // 10, 1):]
    stats["expected_loss_first_step"] = round(losses[0], 4)
    stats["expected_loss_end"] = round(sum(tail) / len(tail), 4)
    return num_samples, stats
