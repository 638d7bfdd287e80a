"""A closed-form step per filter for the variational Fisher, under pathwise slope estimates.

Its step (:func:`closed_form_update`) is shared by the default optimiser,
:mod:`._variational_gauss_newton`, which estimates the slopes from curvature instead.

Why not Adam
------------
Each filter's precision is one scalar, and the objective's dependence on it is almost
known in closed form. With ``s_f = 1/Λ_f`` and the ``(β/2) KL`` convention of
:mod:`.variational`::

    J(s, λ²) = E(s) + (β/4) [ λ² (‖ŵ‖² + n Σ_f s_f) − k log λ² − n Σ_f log s_f ] + const,

where ``E(s) = E_{w ~ N(ŵ, Σ)}[loss(w)]`` is the only part that needs data. Its slope
``g_f = ∂E/∂s_f`` is ``½ Σ_{i∈f} H_ii`` whenever the loss is quadratic in the weights
(exactly), and a slowly varying function of ``s`` otherwise. Given ``g``, the minimiser of
``J`` is closed form (setting ``∂J/∂s_f = 0`` and ``∂J/∂λ² = 0``)::

    Λ_f = λ² + 4 g_f⁺ / (β n),        λ² = k / (‖ŵ‖² + n Σ_f 1/Λ_f).

Adam, by contrast, moves ``L = log Λ`` by about ``lr`` per step whatever the gradient says:
from the reference start the optimum lies several log-units away, hundreds of steps at lr
1e-2 (the reproduction's embeddings barely left their initialisation). Here one step goes
all the way under the current slope estimate; the iteration ``s ← argmin J(·; g(s))`` is a
fixed point exactly at the objective's stationary points, so nothing about the objective
changes, only how it is minimised.

Estimating the slope (variance reduction)
-----------------------------------------
``g_f`` comes from the reparametrised gradient: ``∂E/∂L_f = −s_f g_f``, so
``ĝ_f = −(∂loss/∂L_f) Λ_f`` from one backward pass. That pathwise estimate is dominated
by a zero-mean term ``δ ε / (2√v)`` (``δ`` the loss gradient at the noise-free output,
``v`` the noise variance) whose variance grows as ``1/v``: exactly where the precisions
are large. **Antithetic noise** removes it: every batch runs twice, with noise ``ε`` and
``−ε`` on every measured layer, and the two copies' terms in ``δ`` cancel exactly,
leaving ``ε² × curvature``, whose mean is the slope and whose noise does not blow up.
(One noisy forward of a doubled batch costs what two plain steps cost; measured in
``benchmarks/variational_convergence.py``.)

The slope estimates are averaged over steps with weights proportional to the step index
(``ḡ ← ḡ + 2/(t+1) (ĝ_t − ḡ)``): the average forgets the first steps, taken at the
start's noise scale, as ``O(1/t²)``, while its variance is only 4/3 that of a plain mean.
A clamped slope (``g_f ≤ 0``: no curvature) puts the filter at ``Λ_f = λ²``, where the
returned Hessian ``(β/2)(Λ − λ²)`` is 0, as with Adam.

Safeguard (``line_search=True``, the default)
----------------------------------------------
On a real probe the slope estimates are often wrong in sign (BENCHMARKS.md, "Variational
convergence"), and the full closed-form step then *raises* J: on lite0 with Fashion-MNIST, from
1.29 to 9.8, most filters jumping to the prior. So a step is kept only if J does not rise.
J is measured on the first batch (its antithetic copy included), with the same noise at every
evaluation (common random numbers: a fixed seed drawn once from the run's generator, whose own
stream is left where it was). The step is tried whole, then at 1/2, 1/4 and 1/8 of the way,
and otherwise dropped; no filter's log-precision moves by more than ``MAX_LOG_STEP`` per step.
That makes the iteration a descent method on J. On a loss quadratic in the weights it still
reaches the closed-form optimum within the tests' tolerance; near the optimum it keeps about a
third of the step length, as noisy steps there go up as often as down.

The classifier head, when trained, takes Adam steps at ``head_lr`` on the same data loss,
as in the supplement's joint recipe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ._variational_layers import VarLayer
from ._variational_run import LossFn, Tracker, _batches, check_step, unpack

__all__ = ["closed_form_update", "optimise_fixed_point"]

_PRIOR_ROUNDS = 4  # alternations of the (Λ, λ²) closed forms; n Σ s ≪ ‖ŵ‖² makes it converge at once
MAX_LOG_STEP = 0.5  # the safeguard's cap on a filter's log-precision move per step
_BACKTRACK = (1.0, 0.5, 0.25, 0.125)


def closed_form_update(layers: list[VarLayer], slopes: list[Tensor], beta: float, learn_prior: bool) -> None:
    """Set every layer's ``L`` (and ``λ²`` when learned) to the minimiser of ``J`` for these slopes."""
    with torch.no_grad():
        for layer, g in zip(layers, slopes, strict=True):
            curv = 4.0 * g.clamp_min(0.0) / (beta * layer.per_filter)
            lam2 = layer.log_prior.exp()
            for _ in range(_PRIOR_ROUNDS if learn_prior else 1):
                prec = lam2 + curv
                if learn_prior:
                    lam2 = layer.numel / (layer.sum_w2 + layer.per_filter * (1.0 / prec).sum())
            layer.log_prec.copy_(torch.log(lam2 + curv))
            if learn_prior:
                layer.log_prior.copy_(torch.log(lam2))


def optimise_fixed_point(work: nn.Module, loader: Iterable[Any], epochs: int, steps: int | None,
                         layers: list[VarLayer], loss: LossFn, beta: float, learn_prior: bool,
                         head_params: list[nn.Parameter], head_lr: float, track: Tracker,
                         device: torch.device, noise_gen: torch.Generator | None = None,
                         line_search: bool = True) -> tuple[int, dict[str, float]]:
    """Run the closed-form iteration (see the module doc); ``line_search`` needs ``noise_gen``,
    the generator the noise hooks draw from.

    Returns the samples of the first pass and diagnostics: the share of filters whose
    slope estimate is <= 0 (no positive curvature: they sit at the prior, Ĥ = 0) after the
    first step and at the end; with the safeguard, J at the start and the end and the share
    of steps kept.
    """
    guard = _Guard(work, layers, loss, beta, noise_gen) if line_search and noise_gen is not None else None
    head_opt = torch.optim.Adam(head_params, lr=head_lr) if head_params else None
    slopes = [torch.zeros_like(layer.log_prec, requires_grad=False) for layer in layers]
    wrt: list[Tensor] = [layer.log_prec for layer in layers] + list(head_params)
    num_samples = 0
    stats: dict[str, float] = {}
    losses: list[float] = []
    for epoch, batch in _batches(loader, epochs, steps):
        x, y = unpack(batch, device)
        # The doubled batch carries the antithetic pair: the noise hooks draw ε for the
        # first copy and use −ε for the second.
        xx, yy = torch.cat([x, x]), torch.cat([y, y])
        data = loss(work(xx).float(), yy)
        check_step(data, layers, track.steps_done)
        grads = torch.autograd.grad(data, wrt)
        rho = 2.0 / (track.steps_done + 2)  # weights ∝ step index (t = steps_done + 1)
        with torch.no_grad():
            for i, layer in enumerate(layers):
                g_hat = -grads[i] * layer.log_prec.exp()  # ∂E/∂s_f = −(∂E/∂L_f) / s_f
                slopes[i] += rho * (g_hat - slopes[i])
        before = _state(layers) if guard is not None else None
        closed_form_update(layers, slopes, beta, learn_prior)
        if guard is not None and before is not None:
            guard.step(xx, yy, before)
        losses.append(float(data.detach()))
        if track.steps_done == 0:
            stats["nonpositive_slope_first_step"] = _nonpositive(slopes)
        if head_opt is not None:
            for p, g in zip(head_params, grads[len(layers):], strict=True):
                p.grad = g
            head_opt.step()
        track.step()
        if epoch == 0:
            num_samples += int(x.shape[0])
    stats["nonpositive_slope_end"] = _nonpositive(slopes)
    if guard is not None:
        stats.update(guard.stats())
    # The data term of J under the posterior (one noisy pass per step): at the first step and
    # over the last 10% of the steps. Far above the probe's clean loss = the noise breaks it.
    tail = losses[-max(len(losses) // 10, 1):]
    stats["expected_loss_first_step"] = round(losses[0], 4)
    stats["expected_loss_end"] = round(sum(tail) / len(tail), 4)
    return num_samples, stats



def _nonpositive(slopes: list[Tensor]) -> float:
    flat = torch.cat([g.flatten() for g in slopes])
    return round(float((flat <= 0).float().mean()), 4) if flat.numel() else 0.0


def _state(layers: list[VarLayer]) -> list[tuple[Tensor, Tensor]]:
    return [(layer.log_prec.detach().clone(), layer.log_prior.detach().clone()) for layer in layers]


class _Guard:
    """The safeguard of the module doc: keep a step only where J, under fixed noise, does not rise."""

    def __init__(self, work: nn.Module, layers: list[VarLayer], loss: LossFn, beta: float,
                 noise_gen: torch.Generator) -> None:
        self.work, self.layers, self.loss, self.beta, self.gen = work, layers, loss, beta, noise_gen
        self.seed = int(torch.randint(0, 2**62, (1,), generator=noise_gen).item())
        self.batch: tuple[Tensor, Tensor] | None = None
        self.j_start = self.j = float("nan")
        self.kept = 0.0
        self.steps = 0

    def objective(self) -> float:
        """J on the evaluation batch, with the same noise every time; the generator's stream resumes after."""
        assert self.batch is not None
        state = self.gen.get_state()
        self.gen.manual_seed(self.seed)
        try:
            with torch.no_grad():
                data = float(self.loss(self.work(self.batch[0]).float(), self.batch[1]))
                kl = float(torch.stack([layer.kl() for layer in self.layers]).sum())
        finally:
            self.gen.set_state(state)
        return data + 0.5 * self.beta * kl

    def step(self, x: Tensor, y: Tensor, before: list[tuple[Tensor, Tensor]]) -> None:
        proposed = _state(self.layers)
        if self.batch is None:  # the first batch is the evaluation batch; J at the start
            self.batch = (x, y)
            self._set(before, proposed, 0.0)
            self.j_start = self.j = self.objective()
        self.steps += 1
        proposed = [(lo + (ln - lo).clamp(-MAX_LOG_STEP, MAX_LOG_STEP), pn)
                    for (lo, _), (ln, pn) in zip(before, proposed, strict=True)]
        for t in _BACKTRACK:
            self._set(before, proposed, t)
            j = self.objective()
            if j <= self.j:
                self.j, self.kept = j, self.kept + t
                return
        self._set(before, proposed, 0.0)

    def _set(self, before: list[tuple[Tensor, Tensor]], after: list[tuple[Tensor, Tensor]], t: float) -> None:
        with torch.no_grad():
            for layer, (lo, po), (ln, pn) in zip(self.layers, before, after, strict=True):
                layer.log_prec.copy_(lo + t * (ln - lo))
                layer.log_prior.copy_(po + t * (pn - po))

    def stats(self) -> dict[str, float]:
        return {"objective_start": round(self.j_start, 4), "objective_end": round(self.j, 4),
                "step_fraction_kept": round(self.kept / max(self.steps, 1), 4)}
