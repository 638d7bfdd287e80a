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
* Convergence: ``L`` moves at most ~``lr`` per Adam step (less when gradients are noisy).
  With β = 1e-7 the optimum ``2H̄/β`` can lie several log-units above the initial precision
  (5-7 on tiny random CNNs), i.e. many hundreds of steps at lr 1e-2; a run that stops
  earlier reports a Fisher still biased towards its initialisation. The result says so:
  ``config["log_prec_change"]`` is the mean |L_end - L_init| and
  ``config["late_change_fraction"]`` the share of it that happened over the last 10% of
  the steps (when the step count is known): near 0 when L has settled, near 0.1 or more
  while it is still drifting at a constant rate. :func:`t2v_hub.embed` warns above
  ``UNCONVERGED_FRACTION``; pass ``steps=`` to run longer.
* The expansion assumes the first-order term averages out. A ReLU right after a noisy
  output breaks this near its kink (``E[relu(o + σε)] − relu(o)`` is O(σ), not O(σ²)), so
  on layers with many pre-activations near 0 the estimate also measures that: on a small
  random CNN the first convolutions' within-layer ranks do not follow the exact Fisher,
  while deeper layers, the Linear layer and the ranking across all filters do.

Everything runs on a float32 deep copy of the model in eval mode: the caller's model is
never touched, measured weights are frozen, and only ``L``, ``ℓ`` and (optionally) the
classifier head are trained, with Adam.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..constants import (
    VARIATIONAL_BETA,
    VARIATIONAL_HEAD_LR,
    VARIATIONAL_INPUT_VAR_FLOOR,
    VARIATIONAL_LR,
    VARIATIONAL_VAR_INIT_SCALE,
)
from ..errors import FisherError
from ..probes.layout import filter_parameter_names
from ._variational_layers import TINY_VAR, VarLayer, noise_variance, resolve_layers
from .result import FisherResult

__all__ = ["estimate_variational"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _noise_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """A generator on ``device`` that is a deterministic function of ``generator``."""
    if generator is not None and generator.device.type == device.type:
        return generator
    # Derive a seed from the caller's generator (or torch's global RNG) for another device.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _batches(loader: Iterable[Any], epochs: int, steps: int | None) -> Iterator[tuple[int, Any]]:
    """Yield ``(epoch, batch)``: ``epochs`` passes, or exactly ``steps`` batches cycling the loader."""
    done = 0
    epoch = 0
    while steps is not None or epoch < epochs:
        got = False
        for batch in loader:
            if steps is not None and done >= steps:
                return
            got = True
            done += 1
            yield epoch, batch
        if not got:
            if epoch == 0:
                raise FisherError("the loader yielded no batch; variational Fisher needs data.")
            return  # a one-shot iterable is exhausted
        epoch += 1


def _bernoulli_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Multi-label negative log-likelihood: summed over labels, averaged over the batch."""
    nll = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return nll.reshape(nll.shape[0], -1).sum(dim=1).mean()


UNCONVERGED_FRACTION = 0.05  # late_change_fraction above which the estimate is reported as unconverged


def _warm_start(layers: list[VarLayer], init_hessian: Mapping[str, Tensor], beta: float) -> None:
    """Start each filter at the closed-form optimum Λ = 2H̄/β + λ² for a given Hessian estimate.

    The stationary point does not depend on the start, but Adam moves L by ~lr per step, and
    from the reference start the optimum can be several log-units away (hundreds of steps).
    Given a Hessian estimate (e.g. the montecarlo Fisher), the optimisation starts at the
    optimum of the quadratic model and only has to correct for what that model misses.
    """
    for layer in layers:
        h = init_hessian.get(layer.name)
        if h is None:
            raise FisherError(f"init_hessian has no entry for {layer.name!r}; pass one per measured parameter")
        h = h.detach().float()
        hbar = h.reshape(h.shape[0], -1).mean(dim=1) if h.dim() > 1 else h
        if hbar.numel() != layer.log_prec.numel():
            raise FisherError(f"init_hessian[{layer.name!r}] has {hbar.numel()} filters, the layer {layer.log_prec.numel()}")
        lam2 = layer.log_prior.detach().exp()
        with torch.no_grad():
            layer.log_prec.copy_(torch.log(2.0 * hbar.clamp_min(0.0).to(layer.log_prec.device) / beta + lam2))


def _total_steps(loader: Iterable[Any], epochs: int, steps: int | None) -> int | None:
    if steps is not None:
        return steps
    try:
        return epochs * len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _averaging_start(loader: Iterable[Any], epochs: int, steps: int | None, fraction: float) -> int | None:
    """Index of the first averaged step, or None when averaging is off."""
    if fraction <= 0:
        return None
    total = _total_steps(loader, epochs, steps)
    if total is None:
        raise FisherError("average_last needs the number of steps: pass steps= or a sized loader.")
    return max(total - max(math.ceil(fraction * total), 1), 0)


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
    **_: object,
) -> FisherResult:
    """Robust Fisher of supplement section 6 (see the module docstring for the derivation).

    ``loader`` yields ``(inputs, targets)`` batches (any float dtype: the work runs in fp32,
    so an ``autocast_dtype`` option is ignored). ``epochs`` passes are made over it, or,
    if ``steps`` is given, exactly ``steps`` optimisation steps (cycling the loader, ``epochs``
    ignored). ``loss_fn(outputs, targets)`` must return the mean loss over the batch (default:
    cross-entropy, or with ``likelihood="bernoulli"`` the multi-label sigmoid negative
    log-likelihood summed over labels, for {0,1} float targets). ``prior_precision`` fixes
    the initial λ² of every layer (default ``1/mean(w²)`` per layer); with
    ``learn_prior=False`` it stays there. The classifier head (``model.get_classifier()``)
    is trained jointly at ``head_lr`` if ``train_head``; measured weights never change.
    ``device``: where to run (default: the model's device; always on a copy).

    ``average_last`` in [0, 1): the result averages the iterates of the last fraction of the
    steps (Polyak-Ruppert) instead of taking the last one (0, the reference's behaviour).
    Adam at lr 1e-2 keeps ``L`` jittering by several percent around the optimum; averaging
    the posterior variances ``exp(-L)`` (whose mean is what the stationarity condition fixes,
    since ``∂J/∂L`` is affine in ``exp(-L)``) and the priors ``λ²`` removes most of it.
    The total step count must be known: ``steps``, or ``epochs × len(loader)``.

    Returns ``per_param[name]`` = ``Ĥ_f = (β/2)(Λ_f − λ²)⁺`` broadcast to the weight's shape,
    ``extras["precision/<name>"]`` = ``Λ_f`` and ``extras["prior/<name>"]`` = ``λ²`` (CPU,
    float32). ``num_samples`` counts the samples of the first pass over the loader (those
    of all steps when ``steps`` stops earlier). Deterministic given ``generator``.
    """
    if not beta > 0 or not math.isfinite(beta):
        raise FisherError(f"beta must be a positive number, got {beta!r}.")
    if not lr > 0 or head_lr < 0:
        raise FisherError(f"lr must be > 0 and head_lr >= 0, got lr={lr!r}, head_lr={head_lr!r}.")
    if steps is None and epochs < 1:
        raise FisherError(f"epochs must be >= 1, got {epochs!r} (or pass steps=).")
    if steps is not None and steps < 1:
        raise FisherError(f"steps must be >= 1, got {steps!r}.")
    if input_var_floor < 0 or not var_init_scale > 0:
        raise FisherError("input_var_floor must be >= 0 and var_init_scale > 0.")
    if prior_precision is not None and not prior_precision > 0:
        raise FisherError(f"prior_precision must be > 0, got {prior_precision!r}.")
    if not 0.0 <= average_last < 1.0:
        raise FisherError(f"average_last must be in [0, 1), got {average_last!r}.")
    avg_from = _averaging_start(loader, epochs, steps, average_last)

    names = list(params) if params is not None else filter_parameter_names(model)
    if not names:
        raise FisherError("no parameter to measure: params is empty.")
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if loss_fn is not None:
        loss = loss_fn
    elif likelihood == "categorical":
        loss = F.cross_entropy
    elif likelihood == "bernoulli":
        loss = _bernoulli_nll
    else:
        raise FisherError(f"likelihood must be 'categorical' or 'bernoulli', got {likelihood!r}.")

    # Work on a float32 copy: the caller's model is never mutated, and fp16/bf16 would
    # underflow the variances (~1e-8) and their gradients.
    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # any deepcopy failure means the same thing to the caller
        raise FisherError(f"cannot copy the model for variational Fisher: {exc}") from exc
    work = work.to(device=device, dtype=torch.float32).eval()
    for p in work.parameters():
        p.requires_grad_(False)
        p.grad = None

    layers = resolve_layers(work, names, var_init_scale, prior_precision, learn_prior)
    if init_hessian is not None:
        _warm_start(layers, init_hessian, beta)

    head_params: list[nn.Parameter] = []
    getter = getattr(work, "get_classifier", None)
    head = getter() if callable(getter) else None
    if train_head and head_lr > 0 and isinstance(head, nn.Module):
        head_params = list(head.parameters())
        measured = {id(layer.module.weight) for layer in layers}
        if any(id(p) in measured for p in head_params):
            raise FisherError("a measured parameter belongs to the classifier head; pass train_head=False.")
        for p in head_params:
            p.requires_grad_(True)

    noise_gen = _noise_generator(generator, device)

    def make_hook(layer: VarLayer) -> Callable[[nn.Module, tuple[Any, ...], Tensor], Tensor]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
            layer.calls += 1
            var = noise_variance(layer, inputs[0], input_var_floor)
            eps = torch.randn(output.shape, generator=noise_gen, device=output.device, dtype=output.dtype)
            # clamp: zero gradient (not inf·0 = NaN) where a filter sees no input energy.
            return output + var.clamp_min(TINY_VAR).sqrt() * eps

        return hook

    handles = [layer.module.register_forward_hook(make_hook(layer)) for layer in layers]
    var_params: list[Tensor] = [layer.log_prec for layer in layers]
    if learn_prior:
        var_params += [layer.log_prior for layer in layers]
    groups: list[dict[str, Any]] = [{"params": var_params, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": head_lr})
    optimizer = torch.optim.Adam(groups)

    num_samples = 0
    steps_done = 0
    var_sum = [torch.zeros_like(layer.log_prec, requires_grad=False) for layer in layers]
    prior_sum = [torch.zeros_like(layer.log_prior, requires_grad=False) for layer in layers]
    averaged = 0
    # Convergence diagnostic: L at the start and at 90% of the steps (when the count is known).
    total_steps = _total_steps(loader, epochs, steps)
    late_mark = max(int(0.9 * total_steps), 0) if total_steps else None
    l_init = [layer.log_prec.detach().clone() for layer in layers]
    l_late: list[Tensor] | None = [t.clone() for t in l_init] if late_mark == 0 else None
    try:
        for epoch, batch in _batches(loader, epochs, steps):
            if not isinstance(batch, tuple | list) or len(batch) < 2:
                raise FisherError("the loader must yield (inputs, targets) batches.")
            x, y = batch[0], batch[1]
            if not isinstance(x, Tensor) or not isinstance(y, Tensor):
                raise FisherError("the loader must yield (inputs, targets) tensor batches.")
            x = x.to(device=device, dtype=torch.float32) if x.is_floating_point() else x.to(device)
            y = y.to(device)
            out = work(x)
            data_loss = loss(out.float(), y)
            kl = torch.stack([layer.kl() for layer in layers]).sum()
            total = data_loss + 0.5 * beta * kl
            if not torch.isfinite(total):
                raise FisherError(
                    f"variational loss became {total.item()} at step {steps_done}; lower lr or check the inputs."
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if steps_done == 0:
                silent = [layer.name for layer in layers if layer.calls == 0]
                if silent:
                    raise FisherError(
                        f"layers {silent} were not called as modules in the forward pass (their weight is "
                        "used directly, e.g. nn.MultiheadAttention); exclude them from params."
                    )
            steps_done += 1
            if late_mark is not None and steps_done == late_mark:
                l_late = [layer.log_prec.detach().clone() for layer in layers]
            if avg_from is not None and steps_done > avg_from:
                with torch.no_grad():
                    for i, layer in enumerate(layers):
                        var_sum[i] += torch.exp(-layer.log_prec)
                        prior_sum[i] += layer.log_prior.exp()
                averaged += 1
            if epoch == 0:
                num_samples += int(x.shape[0])
    finally:
        for h in handles:
            h.remove()

    l_end = torch.cat([layer.log_prec.detach().flatten() for layer in layers])
    change = float((l_end - torch.cat([t.flatten() for t in l_init])).abs().mean()) if layers else 0.0
    late = None
    if l_late is not None and change > 0:
        late = float((l_end - torch.cat([t.flatten() for t in l_late])).abs().mean()) / change
    per_param: dict[str, Tensor] = {}
    extras: dict[str, Tensor] = {}
    for i, layer in enumerate(layers):
        if averaged:
            prec = (averaged / var_sum[i]).float().cpu()
            lam2 = (prior_sum[i] / averaged).float().cpu()
        else:
            prec = layer.log_prec.detach().exp().float().cpu()
            lam2 = layer.log_prior.detach().exp().float().cpu()
        hess = (0.5 * beta * (prec - lam2)).clamp_min(0.0)
        shape = tuple(layer.module.weight.shape)
        per_param[layer.name] = hess.view(-1, *([1] * (len(shape) - 1))).expand(shape).contiguous()
        extras[f"precision/{layer.name}"] = prec
        extras[f"prior/{layer.name}"] = lam2
    config: dict[str, Any] = {
        "beta": beta,
        "lr": lr,
        "head_lr": head_lr,
        "epochs": epochs,
        "steps": steps,
        "steps_done": steps_done,
        "log_prec_change": change,
        "late_change_fraction": late,
        "learn_prior": learn_prior,
        "train_head": bool(head_params),
        "input_var_floor": input_var_floor,
        "var_init_scale": var_init_scale,
        "prior_precision": prior_precision,
        "init": "hessian (warm start)" if init_hessian is not None else "reference",
        "average_last": average_last,
        "averaged_steps": averaged,
        "loss_fn": getattr(loss, "__name__", type(loss).__name__),
        "likelihood": likelihood if loss_fn is None else "custom",
        "kl_weight": "beta/2",
        "params": list(names),
    }
    return FisherResult(
        per_param=per_param,
        num_samples=num_samples,
        method="variational",
        config=config,
        sums=None,
        extras=extras,
    )
