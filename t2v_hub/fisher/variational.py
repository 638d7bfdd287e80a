"""Robust (variational) Fisher: supplement section 6, trained with the local reparametrisation trick.

Model
-----
For every measured weight ``w`` (a Conv or Linear weight, ``F`` output filters of ``n``
weights each, ``k = F n``) we place a Gaussian posterior ``N(ŵ, Σ)`` around the trained
value ``ŵ``. ``Σ`` is diagonal with one variance ``s_f = 1 / Λ_f`` shared by the ``n``
weights of filter ``f``, and ``Λ_f = exp(L_f)`` with ``L_f`` unconstrained (supplement 4.2).
The prior is ``N(0, λ⁻² I)`` with one precision ``λ² = exp(ℓ)`` per layer, learned too.

Loss and its stationary point (the convention used here)
---------------------------------------------------------
We minimise ::

    J(L, ℓ) = E_{w ~ N(ŵ, Σ)} [ mean-over-batch loss(w) ] + (β/2) Σ_layers KL(N(ŵ, Σ) ‖ N(0, λ⁻² I))

with the standard Gaussian KL ::

    KL = ½ [ λ² ‖ŵ‖² + λ² tr Σ − k log λ² − log|Σ| − k ].

Expanding the data term to second order around ``ŵ`` (the gradient term has zero mean)
gives ``loss(ŵ) + ½ tr(Σ H)`` with ``H`` the Hessian of the *mean* loss. For filter ``f``::

    ∂J/∂s_f = ½ Σ_{i∈f} H_ii + (β/4) n (λ² − 1/s_f) = 0
    ⇒  Λ_f = 1/s_f = (2/β) (H̄_f + β λ² / 2) = 2 H̄_f / β + λ²,

where ``H̄_f`` is the per-filter mean of the Hessian diagonal. This is *exactly* the
supplement's closed form ``Λ = (2/β)(H + βλ²/2)``. Note that the supplement writes the
penalty as ``β KL``; with ``β KL`` the optimum would be ``Λ = H/β + λ²``. The supplement's
algebra corresponds to a penalty of ``(β/2) KL``, which is what we use so that its closed
form holds exactly. The Hessian estimate we return inverts it::

    Ĥ_f = (β/2) (Λ_f − λ²), clamped at 0 (a filter with no curvature sits at Λ_f = λ²).

The data term is the mean over the batch (the supplement's cross-entropy ``H_{p_w, p̂}``),
so ``Ĥ`` has the scale of a per-sample Fisher and does not depend on the dataset size.
For the learned prior, ``∂J/∂λ² = 0`` gives ``λ² = k / (‖ŵ‖² + n Σ_f s_f)``.

Local reparametrisation (Kingma, Salimans & Welling 2015)
----------------------------------------------------------
Instead of sampling weights, each measured layer's output gets Gaussian noise with the
variance the weight noise would induce: ``out = layer(x) + sqrt(layer_var(x²)) ε``, where
``layer_var`` is the same op (stride, padding, dilation, groups, padding mode, timm's TF
"same" padding) with the weight replaced by the per-filter variances. Because the variance
is constant within a filter, ``layer_var(x²) = s_f · op(x², 1)``, computed once per group.
For a Linear layer applied once per example this is exact. For convolutions (and Linear
layers on sequences) the noise is drawn independently at each output position, which drops
the covariance between positions that share a weight (as in Kingma et al. and the
reference code): the curvature measured is ``Σ_p x_{jp}² ∂²ℓ/∂o_{fp}²``, equal to the exact
Hessian diagonal whenever the loss curvature is diagonal across positions.

Input-energy floor (``input_var_floor``, default 1e-2 as in the reference code)
--------------------------------------------------------------------------------
We follow the reference and use ``x² + c`` instead of ``x²`` in ``layer_var``: every input
element is treated as carrying at least ``c`` of second moment. Its role is numerical: the
noise std ``sqrt(layer_var)`` has an infinite derivative at 0, so a filter whose receptive
field is all zeros (dead ReLU inputs, zero padding) would produce NaN gradients. With
``c > 0`` every in-bounds tap contributes, and the stationary point becomes
``Λ_f = (2/β)(H̄_f + c K_f) + λ²`` with ``K_f`` the filter's output curvature (averaged over the
data, summed over positions, times the fraction of in-bounds taps). The relative bias is
about ``c / E[x²]``: ~1% for unit-scale inputs, but of order 1 for layers whose inputs are
small (on the test CNN, pooled features with ``x² ~ 1e-2`` made the hidden Linear layer's
estimate ~2x too large). ``c = 0`` is allowed and unbiased (the closed-form tests use it):
the std is then computed as ``sqrt(max(v, tiny))``, whose gradient is 0 where ``v`` is 0,
so dead filters and all-zero inputs stay finite.

Initialisation (reference defaults)
-----------------------------------
``s_f = var_init_scale × var(w_f)`` (+1e-8; a constant filter takes the layer's mean
filter variance, an all-zero layer starts at ``Λ = λ²``). FACTS.md quotes the reference as
"lambda^2 init = mean(w^2)": the reference's ``loglambda2`` is used as a prior *variance*
(it divides ``w²``), so in the precision convention here ``λ² = 1 / mean(w²)`` (prior
variance = mean ``w²``); that is what we do (``prior_precision=`` overrides it).

Caveats
-------
* Convergence: the default optimiser (``optimizer="gauss_newton"``,
  :mod:`._variational_gauss_newton`) sets every filter to the closed-form minimiser under a
  Gauss-Newton estimate of its slope (PSD, one backward per batch and class); on lite0 with
  1,000 Fashion-MNIST images it settles in 2 passes, different starts end closer than two
  seeds, and it selects experts as well as montecarlo (BENCHMARKS.md). With Adam
  (``optimizer="adam"``, the supplement's recipe)
  ``L`` moves at most ~``lr`` per step (less when gradients are noisy). With β = 1e-7 the
  optimum ``2H̄/β`` can lie several log-units above the initial precision (5-7 on tiny
  random CNNs), i.e. many hundreds of steps at lr 1e-2; a run that stops earlier reports a
  Fisher still biased towards its initialisation. ``optimizer="fixed_point"``
  (:mod:`._variational_fixed_point`) instead jumps to the closed-form minimiser under a
  Monte Carlo estimate of each filter's slope (antithetic noise), which reaches the optimum
  of a quadratic loss in tens of steps. The result says how far it got:
  ``config["log_prec_change"]`` is the mean |L_end - L_init| and
  ``config["late_change_fraction"]`` the share of it that happened over the last 10% of
  the steps (when the step count is known): near 0 when L has settled, near 0.1 or more
  while it is still drifting at a constant rate. :func:`t2v_hub.embed` warns above
  ``UNCONVERGED_FRACTION``; pass ``steps=`` to run longer.
* What the optimum is on a real probe: the expansion of the supplement assumes ŵ is a
  minimum of the task's loss, where the Hessian is the (PSD) Fisher. A probe's backbone is
  not (only its head is fitted), and on tf_efficientnet_lite0 with Fashion-MNIST 64-69% of
  the filters' slope estimates are <= 0 at the first step, from the reference start (whose
  noise already raises the probe's loss from 0.53 to 2.2 nats) and from a narrow one alike.
  Trusting those estimates, the closed-form step sends 85-90% of the filters to the prior and
  the expected loss to 5-8 nats, *raising* J (d_sym 0.92 between two seeds, against 0.09 for
  montecarlo). Its safeguard (``line_search``, on by default) keeps only steps that lower J:
  no collapse, J 2.4 → 1.6 from the reference start, but the run stalls, with seeds still
  0.57-0.84 apart. The pathwise estimate is what fails there: its noise enters at first order
  and carries the kink terms of the ReLUs, which the Gauss-Newton slope of the default
  optimiser drops (as the supplement's expansion does). See BENCHMARKS.md, "Variational
  convergence".
* The expansion assumes the first-order term averages out. A ReLU right after a noisy
  output breaks this near its kink (``E[relu(o + σε)] − relu(o)`` is O(σ), not O(σ²)), so
  on layers with many pre-activations near 0 the estimate also measures that: on a small
  random CNN the first convolutions' within-layer ranks do not follow the exact Fisher,
  while deeper layers, the Linear layer and the ranking across all filters do.

Everything runs on a float32 deep copy of the model in eval mode: the caller's model is
never touched, measured weights are frozen, and only ``L``, ``ℓ`` and (optionally) the
classifier head (with Adam, at ``head_lr``) are trained.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..constants import (
    VARIATIONAL_BETA,
    VARIATIONAL_HEAD_LR,
    VARIATIONAL_INPUT_VAR_FLOOR,
    VARIATIONAL_LR,
    VARIATIONAL_OPTIMIZER,
    VARIATIONAL_VAR_INIT_SCALE,
)
from ..devices import pick_device
from ..errors import FisherError
from ..probes.layout import filter_parameter_names
from . import _variational_gauss_newton as _gn
from ._variational_fixed_point import optimise_fixed_point
from ._variational_gauss_newton import curvature_factor, optimise_gauss_newton
from ._variational_layers import resolve_layers
from ._variational_run import (
    OPTIMIZERS,
    LossFn,
    Tracker,
    _averaging_start,
    _batches,
    _noise_generator,
    _total_steps,
    _warm_start,
    check_settings,
    check_step,
    install_noise,
    loss_for,
    make_optimizer,
    trainable_head,
    unpack,
    working_copy,
)
from .result import FisherResult

__all__ = ["OPTIMIZERS", "UNCONVERGED_FRACTION", "estimate_variational"]

UNCONVERGED_FRACTION = 0.05  # late_change_fraction above which the estimate is reported as unconverged


def estimate_variational(
    model: nn.Module,
    loader: Iterable[tuple[Tensor, Tensor]],
    *,
    params: list[str] | None = None,
    generator: torch.Generator | None = None,
    beta: float = VARIATIONAL_BETA,
    lr: float = VARIATIONAL_LR,
    head_lr: float = VARIATIONAL_HEAD_LR,
    epochs: int = 2,
    steps: int | None = None,
    learn_prior: bool = True,
    train_head: bool = True,
    input_var_floor: float = VARIATIONAL_INPUT_VAR_FLOOR,
    var_init_scale: float = VARIATIONAL_VAR_INIT_SCALE,
    device: torch.device | str | None = None,
    loss_fn: LossFn | None = None,
    prior_precision: float | None = None,
    average_last: float = 0.0,
    likelihood: str = "categorical",
    init_hessian: Mapping[str, Tensor] | None = None,
    optimizer: str = VARIATIONAL_OPTIMIZER,
    line_search: bool = True,
    **_: object,
) -> FisherResult:
    """Robust Fisher of supplement section 6 (see the module docstring for the derivation).

    ``loader`` yields ``(inputs, targets)`` batches (any float dtype: the work runs in fp32,
    so an ``autocast_dtype`` option is ignored). ``epochs`` passes are made over it, or,
    if ``steps`` is given, exactly ``steps`` optimisation steps (cycling the loader, ``epochs``
    ignored). ``loss_fn(outputs, targets)`` must return the mean loss over the batch (default:
    cross-entropy, or with ``likelihood="bernoulli"`` the multi-label sigmoid negative
    log-likelihood summed over labels, for {0,1} float targets). ``prior_precision`` fixes the
    initial λ² of every layer (default ``1/mean(w²)``), kept if ``learn_prior=False``. The head
    (``model.get_classifier()``) is trained at ``head_lr`` if ``train_head``; measured weights
    never change. ``device``: where to run (default: the model's; always on a copy).

    ``optimizer``: ``"gauss_newton"`` (the default, :mod:`._variational_gauss_newton`: the
    closed-form step per filter under Gauss-Newton slopes; ``lr`` unused, recorded as None),
    ``"adam"`` (the supplement's recipe, at ``lr``) or ``"fixed_point"``
    (:mod:`._variational_fixed_point`, pathwise slopes; ``line_search``: its J-monotone
    safeguard, ignored by the others). Both closed-form optimisers record extra diagnostics.
    ``average_last`` in [0, 1): average the iterates of the last fraction of the steps (Polyak-Ruppert, on the variances ``exp(-L)`` and ``λ²``) instead of taking the last one
    (0, the reference's); the step count must be known (``steps``, or ``epochs × len(loader)``).

    Returns ``per_param[name]`` = ``Ĥ_f = (β/2)(Λ_f − λ²)⁺`` broadcast to the weight's shape,
    ``extras["precision/<name>"]`` = ``Λ_f`` and ``extras["prior/<name>"]`` = ``λ²`` (CPU,
    float32). ``num_samples``: the samples of the first pass (or of all steps when ``steps``
    stops earlier). Deterministic given ``generator``.
    """
    check_settings(beta, lr, head_lr, epochs, steps, input_var_floor, var_init_scale, prior_precision, average_last,
                   optimizer)
    avg_from = _averaging_start(loader, epochs, steps, average_last)
    names = list(params) if params is not None else filter_parameter_names(model)
    if not names:
        raise FisherError("no parameter to measure: params is empty.")
    device = _device_of(model, device)
    loss = loss_for(likelihood, loss_fn)
    work = working_copy(model, device)
    layers = resolve_layers(work, names, var_init_scale, prior_precision, learn_prior)
    if init_hessian is not None:
        _warm_start(layers, init_hessian, beta)
    head_params = trainable_head(work, layers, train_head, head_lr)
    noise_gen = _noise_generator(generator, device)
    record: list[tuple[int, Tensor, Tensor]] = []
    antithetic = optimizer == "fixed_point" or (optimizer == "gauss_newton" and _gn.ANTITHETIC)
    handles = install_noise(layers, input_var_floor, noise_gen, antithetic=antithetic,
                            record=record if optimizer == "gauss_newton" else None)
    total_steps = _total_steps(loader, epochs, steps)  # the late-change mark: 90% of the steps, when known
    track = Tracker(layers, avg_from, max(int(0.9 * total_steps), 0) if total_steps else None)
    run = _Run(work, loader, epochs, steps, layers, loss, beta, learn_prior, head_params, head_lr, track, device)
    try:
        num_samples, diagnostics = run.optimise(optimizer, lr, noise_gen, line_search,
                                                curvature_factor(likelihood, loss_fn is not None), record)
    finally:
        for h in handles:
            h.remove()
    fixed_point = optimizer == "fixed_point"
    change, late = track.change()
    config: dict[str, Any] = {
        "optimizer": optimizer, "line_search": line_search if fixed_point else None, "beta": beta,
        "lr": lr if optimizer == "adam" else None, "head_lr": head_lr, "epochs": epochs,
        "steps": steps, "steps_done": track.steps_done, "log_prec_change": change, "late_change_fraction": late,
        "learn_prior": learn_prior, "train_head": bool(head_params), "input_var_floor": input_var_floor,
        "var_init_scale": var_init_scale, "prior_precision": prior_precision, "average_last": average_last,
        "init": "hessian (warm start)" if init_hessian is not None else "reference", "averaged_steps": track.averaged,
        "loss_fn": getattr(loss, "__name__", type(loss).__name__), "kl_weight": "beta/2", "params": list(names),
        "likelihood": likelihood if loss_fn is None else "custom", **diagnostics,
    }
    return track.result(beta, num_samples, config)


def _device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is None:
        first = next(model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")
    return pick_device(device)


class _Run:
    """What every optimiser takes, in the order of their signatures."""

    def __init__(self, work: nn.Module, loader: Iterable[Any], epochs: int, steps: int | None, layers: list[Any],
                 loss: LossFn, beta: float, learn_prior: bool, head_params: list[nn.Parameter], head_lr: float,
                 track: Tracker, device: torch.device) -> None:
        self.work, self.loader, self.epochs, self.steps, self.layers = work, loader, epochs, steps, layers
        self.loss, self.beta, self.learn_prior, self.head_params, self.head_lr = loss, beta, learn_prior, head_params, head_lr
        self.track, self.device = track, device

    def optimise(self, optimizer: str, lr: float, noise_gen: torch.Generator, line_search: bool, factor: Any,
                 record: list[Any]) -> tuple[int, dict[str, float]]:
        """Run ``optimizer``; returns the samples of the first pass and its diagnostics."""
        if optimizer == "fixed_point":
            return optimise_fixed_point(self.work, self.loader, self.epochs, self.steps, self.layers, self.loss,
                                        self.beta, self.learn_prior, self.head_params, self.head_lr, self.track,
                                        self.device, noise_gen, line_search)
        if optimizer == "gauss_newton":
            return optimise_gauss_newton(self.work, self.loader, self.epochs, self.steps, self.layers, self.loss,
                                         factor, self.beta, self.learn_prior, self.head_params, self.head_lr,
                                         self.track, self.device, noise_gen, record)
        opt = make_optimizer(self.layers, self.learn_prior, lr, self.head_params, self.head_lr)
        return _optimise(self.work, self.loader, self.epochs, self.steps, self.layers, self.loss, self.beta, opt,
                         self.track, self.device), {}


def _optimise(work: nn.Module, loader: Iterable[Any], epochs: int, steps: int | None, layers: list[Any],
              loss: LossFn, beta: float, optimizer: torch.optim.Optimizer, track: Tracker,
              device: torch.device) -> int:
    """Adam on J = E[loss] + (beta/2) KL; returns the samples of the first pass."""
    num_samples = 0
    for epoch, batch in _batches(loader, epochs, steps):
        x, y = unpack(batch, device)
        total = loss(work(x).float(), y) + 0.5 * beta * torch.stack([layer.kl() for layer in layers]).sum()
        check_step(total, layers, track.steps_done, hint="lower lr or check the inputs")
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        track.step()
        if epoch == 0:
            num_samples += int(x.shape[0])
    return num_samples
