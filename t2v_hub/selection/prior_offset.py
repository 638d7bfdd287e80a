"""MODEL2VEC's per-expert offset as a weight on the static prior, chosen by cross-validation over domains.

The static rule "the expert with the lowest mean error" wins where no expert shares the task's
domain and loses where one does; d_sym (and the learned layer weights) do the opposite. This adds
``beta * (g_j - mean g)`` to every expert's score, where ``g_j`` is the expert's generalist score
(its mean relative error increase over the training tasks, :mod:`.generalist`), and picks ``beta``
from a small grid by how well it chooses on *held-out groups of training tasks*.

The groups stand in for domains, which an error matrix does not name: average-linkage clusters of
the training tasks under d_sym. Random folds would hold out tasks whose siblings stay in training,
and reward the prior for memorising domains (``benchmarks.model2vec_prior`` measures both, and
the folds by the zoo's true pools). ``beta = 0`` is MODEL2VEC without the prior, so the grid always
contains what the selector was before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .generalist import generalist_scores
from .kernels.ranking import sym_to_target

# Spans "no prior" to "the prior decides" for distances of 0.1-1 and relative error increases of 0.1-3.
PRIOR_GRID = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
# Below this many training tasks there is nothing to hold out: the prior stays off (beta = 0).
MIN_TASKS = 4


def task_groups(X: torch.Tensor, k: int) -> list[list[int]]:
    """``k`` average-linkage clusters of the rows of ``X`` under d_sym, each a sorted list of row indices.

    Deterministic (ties merge the lowest indices first). The distances are one pass of the ranking
    kernel per task: 0.7 s for 200 tasks of lite0's 21,008 filters on 2 CPUs, against 10 s for the
    broadcast ``cdist`` (`selector eval` clusters once per task left out). The merges are O(T^3), ms.
    """
    T = X.shape[0]
    D = torch.stack([sym_to_target(X, X[i]) for i in range(T)]).double() if T else torch.zeros(0, 0)
    groups = [[i] for i in range(T)]
    # Linkage sums between current groups; the average is the sum over the product of the sizes.
    link = D.clone()
    alive = list(range(T))
    while len(alive) > max(k, 1):
        sizes = torch.tensor([len(groups[a]) for a in alive], dtype=torch.float64)
        avg = link[alive][:, alive] / (sizes[:, None] * sizes[None, :])
        avg.fill_diagonal_(float("inf"))
        flat = int(torch.argmin(avg))
        a, b = sorted((alive[flat // len(alive)], alive[flat % len(alive)]))
        groups[a] += groups[b]
        link[a] += link[b]
        link[:, a] += link[:, b]
        alive.remove(b)
    return [sorted(groups[a]) for a in alive]


def centred(g: torch.Tensor) -> torch.Tensor:
    """``g - mean(g)``, 0 where ``g`` is NaN (an expert with too few known tasks gets no push either way)."""
    known = torch.isfinite(g)
    if not bool(known.any()):
        return torch.zeros_like(g)
    return torch.where(known, g - g[known].mean(), torch.zeros_like(g))


def chosen_error_sum(errors: torch.Tensor, scores: torch.Tensor) -> float:
    """Sum over tasks of the error of the lowest-scored expert among those with a known error."""
    s = torch.where(torch.isfinite(errors), scores, torch.full_like(scores, float("inf")))
    return float(errors.nan_to_num(0.0).gather(1, s.argmin(1, keepdim=True)).sum())


def cv_prior_weight(
    X: torch.Tensor, errors: torch.Tensor, score_rows: Callable[[list[int], list[int]], torch.Tensor],
    *, folds: int, grid: Sequence[float] = PRIOR_GRID,
) -> tuple[float, dict[str, object]]:
    """The ``beta`` of ``grid`` whose prior offset chooses best on held-out groups of tasks, and a record.

    ``score_rows(train, held)`` returns the selector's scores (held x experts) of a selector trained on
    the rows ``train`` only. Ties go to the smaller ``beta``: the prior must earn its weight.
    """
    groups = task_groups(X, folds)
    record: dict[str, object] = {"folds": len(groups), "group_sizes": sorted(len(g) for g in groups)}
    # A cluster of one task is kept: average linkage leaves outlying tasks alone, and an outlier
    # held out is what a task from a new domain looks like.
    if X.shape[0] < MIN_TASKS or len(groups) < 2:
        record["skipped"] = f"fewer than {MIN_TASKS} tasks"
        return 0.0, record
    T = X.shape[0]
    held_out = []
    for held in groups:
        out = set(held)
        train = [i for i in range(T) if i not in out]
        g = centred(generalist_scores(errors[train]))
        held_out.append((errors[held], score_rows(train, held), g))
    totals = {float(b): sum(chosen_error_sum(e, s + b * g[None, :]) for e, s, g in held_out) for b in grid}
    n = sum(int(e.shape[0]) for e, _, _ in held_out)
    best = min(totals, key=lambda b: (round(totals[b], 9), b))
    record["mean_chosen_error"] = {str(b): round(v / n, 6) for b, v in totals.items()}
    return best, record
