"""The machinery of the variational estimator (:mod:`.variational`): batches, noise, tracking, result.

Split out so :func:`~t2v_hub.fisher.variational.estimate_variational` reads as the
algorithm: check the settings, copy the model, install the noise hooks, run Adam,
return the Hessian estimate. Nothing here is public.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FisherError
from ._variational_layers import TINY_VAR, VarLayer, noise_variance
from .result import FisherResult

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


# "adam": the supplement's recipe, Adam on L at ``lr``; "fixed_point": the closed-form step
# per filter of :mod:`._variational_fixed_point` under pathwise slope estimates (exact on a
# loss quadratic in the weights; on real probes those estimates are noise, see BENCHMARKS.md
# "Variational convergence"); "gauss_newton" (the default, constants.VARIATIONAL_OPTIMIZER):
# the same closed-form step under Gauss-Newton slopes (PSD; :mod:`._variational_gauss_newton`).
OPTIMIZERS = ("adam", "fixed_point", "gauss_newton")


def check_settings(beta: float, lr: float, head_lr: float, epochs: int, steps: int | None, input_var_floor: float,
                   var_init_scale: float, prior_precision: float | None, average_last: float,
                   optimizer: str = "adam") -> None:
    if optimizer not in OPTIMIZERS:
        raise FisherError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}.")
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


def loss_for(likelihood: str, loss_fn: LossFn | None) -> LossFn:
    if loss_fn is not None:
        return loss_fn
    if likelihood == "categorical":
        return F.cross_entropy
    if likelihood == "bernoulli":
        return _bernoulli_nll
    raise FisherError(f"likelihood must be 'categorical' or 'bernoulli', got {likelihood!r}.")


def working_copy(model: nn.Module, device: torch.device) -> nn.Module:
    """A frozen float32 copy: the caller's model is never mutated, and fp16/bf16 would
    underflow the variances (~1e-8) and their gradients."""
    try:
        work = copy.deepcopy(model)
    except Exception as exc:  # any deepcopy failure means the same thing to the caller
        raise FisherError(f"cannot copy the model for variational Fisher: {exc}") from exc
    work = work.to(device=device, dtype=torch.float32).eval()
    for p in work.parameters():
        p.requires_grad_(False)
        p.grad = None
    return work


def trainable_head(work: nn.Module, layers: list[VarLayer], train_head: bool, head_lr: float) -> list[nn.Parameter]:
    getter = getattr(work, "get_classifier", None)
    head = getter() if callable(getter) else None
    if not (train_head and head_lr > 0 and isinstance(head, nn.Module)):
        return []
    params = list(head.parameters())
    measured = {id(layer.module.weight) for layer in layers}
    if any(id(p) in measured for p in params):
        raise FisherError("a measured parameter belongs to the classifier head; pass train_head=False.")
    for p in params:
        p.requires_grad_(True)
    return params


def make_optimizer(layers: list[VarLayer], learn_prior: bool, lr: float, head_params: list[nn.Parameter],
                   head_lr: float) -> torch.optim.Optimizer:
    """Adam on the log-precisions (and log-priors when learned) at ``lr``, the head at ``head_lr``."""
    var_params: list[Tensor] = [layer.log_prec for layer in layers]
    if learn_prior:
        var_params += [layer.log_prior for layer in layers]
    groups: list[dict[str, Any]] = [{"params": var_params, "lr": lr}]
    if head_params:
        groups.append({"params": head_params, "lr": head_lr})
    return torch.optim.Adam(groups)


def install_noise(layers: list[VarLayer], input_var_floor: float, noise_gen: torch.Generator,
                  antithetic: bool = False, record: list[tuple[int, Tensor, Tensor]] | None = None) -> list[Any]:
    """Local reparametrisation: each measured layer's output gets the noise its weights would induce.

    ``antithetic``: the batch holds two copies of the same inputs; the second copy gets the
    negated noise of the first (every layer's leading dimension is the batch, or the batch
    folded with windows or tokens in batch-major order, so halves stay copies).
    ``record``: each call appends ``(layer index, noisy output, input energy)`` (the energy is
    ``op(x² + floor, 1)`` broadcast to the output, i.e. the noise variance over ``s_f``), for
    the Gauss-Newton optimiser, which needs the curvature at each output.
    """

    def draw(shape: torch.Size, output: Tensor) -> Tensor:
        if antithetic and shape[0] % 2 == 0:
            half = torch.randn((shape[0] // 2, *shape[1:]), generator=noise_gen, device=output.device,
                               dtype=output.dtype)
            return torch.cat([half, -half])
        return torch.randn(shape, generator=noise_gen, device=output.device, dtype=output.dtype)

    def make_hook(index: int, layer: VarLayer) -> Callable[[nn.Module, tuple[Any, ...], Tensor], Tensor]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Tensor) -> Tensor:
            layer.calls += 1
            var = noise_variance(layer, inputs[0], input_var_floor)
            eps = draw(output.shape, output)
            # clamp: zero gradient (not inf·0 = NaN) where a filter sees no input energy.
            noisy = output + var.clamp_min(TINY_VAR).sqrt() * eps
            if record is not None:
                prec = layer.log_prec.detach().exp()
                if not isinstance(layer.module, nn.Linear):  # filters on dim 1
                    prec = prec.view(1, -1, *([1] * (var.dim() - 2)))
                record.append((index, noisy, var.detach() * prec))
            return noisy

        return hook

    return [layer.module.register_forward_hook(make_hook(i, layer)) for i, layer in enumerate(layers)]


def check_step(value: Tensor, layers: list[VarLayer], step: int, hint: str = "check the inputs") -> None:
    """Every optimiser's per-step checks: a finite loss, and (first step) every layer called as a module."""
    if not torch.isfinite(value):
        raise FisherError(f"variational loss became {value.item()} at step {step}; {hint}.")
    silent = [layer.name for layer in layers if layer.calls == 0] if step == 0 else []
    if silent:
        raise FisherError(
            f"layers {silent} were not called as modules in the forward pass (their weight is "
            "used directly, e.g. nn.MultiheadAttention); exclude them from params."
        )


def unpack(batch: Any, device: torch.device) -> tuple[Tensor, Tensor]:
    if not isinstance(batch, tuple | list) or len(batch) < 2:
        raise FisherError("the loader must yield (inputs, targets) batches.")
    x, y = batch[0], batch[1]
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise FisherError("the loader must yield (inputs, targets) tensor batches.")
    x = x.to(device=device, dtype=torch.float32) if x.is_floating_point() else x.to(device)
    return x, y.to(device)


@dataclass
class Tracker:
    """Polyak-Ruppert averages of the last steps, and the convergence diagnostic."""

    layers: list[VarLayer]
    avg_from: int | None
    late_mark: int | None
    steps_done: int = 0
    averaged: int = 0
    l_init: list[Tensor] = field(default_factory=list)
    l_late: list[Tensor] | None = None
    var_sum: list[Tensor] = field(default_factory=list)
    prior_sum: list[Tensor] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.l_init = [layer.log_prec.detach().clone() for layer in self.layers]
        self.l_late = [t.clone() for t in self.l_init] if self.late_mark == 0 else None
        self.var_sum = [torch.zeros_like(layer.log_prec, requires_grad=False) for layer in self.layers]
        self.prior_sum = [torch.zeros_like(layer.log_prior, requires_grad=False) for layer in self.layers]

    def step(self) -> None:
        self.steps_done += 1
        if self.late_mark is not None and self.steps_done == self.late_mark:
            self.l_late = [layer.log_prec.detach().clone() for layer in self.layers]
        if self.avg_from is not None and self.steps_done > self.avg_from:
            with torch.no_grad():
                for i, layer in enumerate(self.layers):
                    self.var_sum[i] += torch.exp(-layer.log_prec)
                    self.prior_sum[i] += layer.log_prior.exp()
            self.averaged += 1

    def change(self) -> tuple[float, float | None]:
        """Mean |L_end - L_init| and the share of it made after ``late_mark``."""
        if not self.layers:
            return 0.0, None
        l_end = torch.cat([layer.log_prec.detach().flatten() for layer in self.layers])
        change = float((l_end - torch.cat([t.flatten() for t in self.l_init])).abs().mean())
        late = None
        if self.l_late is not None and change > 0:
            late = float((l_end - torch.cat([t.flatten() for t in self.l_late])).abs().mean()) / change
        return change, late

    def result(self, beta: float, num_samples: int, config: dict[str, Any]) -> FisherResult:
        per_param: dict[str, Tensor] = {}
        extras: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            if self.averaged:
                prec = (self.averaged / self.var_sum[i]).float().cpu()
                lam2 = (self.prior_sum[i] / self.averaged).float().cpu()
            else:
                prec = layer.log_prec.detach().exp().float().cpu()
                lam2 = layer.log_prior.detach().exp().float().cpu()
            hess = (0.5 * beta * (prec - lam2)).clamp_min(0.0)
            shape = tuple(layer.module.weight.shape)
            per_param[layer.name] = hess.view(-1, *([1] * (len(shape) - 1))).expand(shape).contiguous()
            extras[f"precision/{layer.name}"] = prec
            extras[f"prior/{layer.name}"] = lam2
        # The learned prior per layer (in the order of params): with it the precisions
        # (β/2)Λ = Ĥ + (β/2)λ² and the reference code's trivial embedding (every filter at
        # its prior) are rebuilt from an embedding alone (benchmarks/variational_selection.py).
        config["prior_precision_per_layer"] = [float(extras[f"prior/{layer.name}"].mean()) for layer in self.layers]
        return FisherResult(per_param=per_param, num_samples=num_samples, method="variational", config=config,
                            sums=None, extras=extras)
