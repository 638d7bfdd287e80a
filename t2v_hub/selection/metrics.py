"""How well a ranking of experts selects them, given a tasks x experts error matrix.

Metrics (per task over its known, non-excluded cells; then averaged):

- ``relative_error_increase``: (mean chosen error - mean best error) / mean best
  error, the paper's Table 1 figure ("+9.97%" next to a best error of 31.24 reads
  as a ratio of means); ``relative_error_increase_per_task`` averages the per-task
  ratios instead (tasks whose best error is 0 are left out of that one);
- ``weighted_tau``: ``scipy.stats.weightedtau(-score, -error)``: hyperbolic weights
  on the ranks, so agreement on the best experts counts most; NaN for tasks with
  fewer than two experts or constant errors, which are left out of the mean;
- ``top1``: fraction of tasks where the chosen expert has the best error (ties hit).
"""

from __future__ import annotations

import math

import torch

from ..errors import SelectorError

# -- evaluation ----------------------------------------------------------------------------


def evaluate_selection(
    errors: torch.Tensor, scores: torch.Tensor, exclude: torch.Tensor | None = None
) -> dict[str, float]:
    """How well ``scores`` (T, E; lower = better) select experts given true ``errors``.

    Cells that are NaN in ``errors`` or ``scores``, or True in ``exclude`` (e.g. the
    expert trained on the task itself), are ignored. Returns the metrics of the
    module docstring plus ``mean_chosen_error``, ``mean_best_error``, ``num_tasks``.
    """
    from scipy.stats import weightedtau

    for name, value in (("errors", errors), ("scores", scores), ("exclude", exclude)):
        if value is not None and not isinstance(value, torch.Tensor):
            raise SelectorError(f"{name}={type(value).__name__}: expected a (tasks, experts) tensor"
                                + (", or None" if name == "exclude" else ""))
    if errors.shape != scores.shape or (exclude is not None and exclude.shape != errors.shape):
        raise SelectorError(f"errors {tuple(errors.shape)}, scores {tuple(scores.shape)}"
                            + (f" and exclude {tuple(exclude.shape)}" if exclude is not None else "")
                            + " must have the same (tasks, experts) shape")
    err, sc = errors.double(), scores.double()
    valid = torch.isfinite(err) & torch.isfinite(sc)
    if exclude is not None:
        valid &= ~exclude.bool()
    chosen, best, ratios, taus, hits = [], [], [], [], []
    for i in range(err.shape[0]):
        v = valid[i].nonzero().flatten()
        if v.numel() == 0:
            continue
        e, s = err[i, v], sc[i, v]
        j = int(torch.argmin(s))  # first minimum: deterministic tie-break by column order
        b = float(e.min())
        chosen.append(float(e[j]))
        best.append(b)
        hits.append(float(e[j] <= b))
        if b > 0:
            ratios.append((float(e[j]) - b) / b)
        if v.numel() >= 2 and float(e.max()) > float(e.min()):
            tau = weightedtau(-s.numpy(), -e.numpy()).statistic
            if math.isfinite(tau):
                taus.append(float(tau))
    if not chosen:
        raise SelectorError("no task has a known error for any scored expert; nothing to evaluate")
    mc, mb = sum(chosen) / len(chosen), sum(best) / len(best)
    return {
        "relative_error_increase": (mc - mb) / mb if mb > 0 else math.nan,
        "relative_error_increase_per_task": sum(ratios) / len(ratios) if ratios else math.nan,
        "weighted_tau": sum(taus) / len(taus) if taus else math.nan,
        "top1": sum(hits) / len(hits),
        "mean_chosen_error": mc,
        "mean_best_error": mb,
        "num_tasks": float(len(chosen)),
    }


def chance_baseline(errors: torch.Tensor, exclude: torch.Tensor | None = None) -> dict[str, float]:
    """Expected metrics of picking an expert uniformly at random (exact expectation, no sampling)."""
    err = errors.double()
    valid = torch.isfinite(err)
    if exclude is not None:
        valid &= ~exclude.bool()
    chosen, best, ratios, hits = [], [], [], []
    for i in range(err.shape[0]):
        e = err[i, valid[i]]
        if e.numel() == 0:
            continue
        b = float(e.min())
        chosen.append(float(e.mean()))
        best.append(b)
        hits.append(float((e <= b).double().mean()))
        if b > 0:
            ratios.append(float(((e - b) / b).mean()))
    if not chosen:
        raise SelectorError("no task has a known error; nothing to evaluate")
    mc, mb = sum(chosen) / len(chosen), sum(best) / len(best)
    return {
        "relative_error_increase": (mc - mb) / mb if mb > 0 else math.nan,
        "relative_error_increase_per_task": sum(ratios) / len(ratios) if ratios else math.nan,
        "weighted_tau": 0.0,  # a random order is uncorrelated with the errors in expectation
        "top1": sum(hits) / len(hits),
        "mean_chosen_error": mc,
        "mean_best_error": mb,
        "num_tasks": float(len(chosen)),
    }


def static_scores(errors: torch.Tensor, expert: int) -> torch.Tensor:
    """'Always this expert': score 0 for it, 1 for every other (they tie)."""
    s = torch.ones(errors.shape)
    s[:, expert] = 0.0
    return s


def loo_mean_error_scores(errors: torch.Tensor) -> torch.Tensor:
    """Static ranking by each expert's mean error on the *other* tasks (leave-one-out)."""
    e = errors.double()
    known = torch.isfinite(e)
    z = torch.where(known, e, torch.zeros((), dtype=e.dtype))
    tot, cnt = z.sum(0, keepdim=True), known.sum(0, keepdim=True).double()
    loo_tot, loo_cnt = tot - z, cnt - known.double()
    s = torch.where(loo_cnt > 0, loo_tot / loo_cnt.clamp_min(1), torch.full((), math.inf, dtype=e.dtype))
    return s.float()


__all__ = [
    "chance_baseline",
    "evaluate_selection",
    "loo_mean_error_scores",
    "static_scores",
]
