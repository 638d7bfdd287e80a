"""The generalist slot of the two-stage shortlist: experts that transfer well on average.

TASK2VEC's shortlist holds the experts whose training task looks most like the user's.
Where the task is about a property orthogonal to the image domain (glyph *style* on a
glyph hub: bold, italic, serif), the experts that transfer come from other domains and
d_sym ranks them last; LogME on every expert finds them, a shortlist of the nearest
never does (BENCHMARKS.md, "Two stages"). A selector's error matrix says which experts
are good *in general*: the static "best average expert" rule that beats d_asym on new
domains. Adding the best of those to the shortlist hedges stage 1 with it, and stage 2
(one forward pass per shortlisted expert) decides between them on the user's data.

The generalist score of an expert is its mean *relative* error increase over the
training tasks with a known error for it, ``(err - best) / best`` with ``best`` the
task's lowest known error: relative, so the hardest tasks (errors 0.3-0.5) do not
outweigh the easy ones (0.01-0.05), which is what made the plain mean error a worse
slot on the zoo (its rows in BENCHMARKS.md). Lower is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Floor of a task's best error in the relative increase: a task some expert solves perfectly
# (error 0) still ranks the others by how far behind they are, without dividing by zero.
BEST_ERROR_FLOOR = 1e-3
# An expert backed by fewer known training tasks gets no generalist score: one lucky task is no evidence.
MIN_TASKS = 2


def generalist_scores(errors: torch.Tensor, *, min_tasks: int = MIN_TASKS) -> torch.Tensor:
    """Each expert's mean relative error increase over its known tasks (E,); NaN if under ``min_tasks``.

    ``errors`` is the (tasks x experts) error matrix, NaN where unknown.
    """
    E = torch.as_tensor(errors, dtype=torch.float64)
    known = torch.isfinite(E)
    best = torch.where(known, E, torch.full_like(E, float("inf"))).min(1, keepdim=True).values
    rel = (E - best) / best.clamp_min(BEST_ERROR_FLOOR)
    n = known.sum(0)
    mean = torch.where(known, rel, torch.zeros(())).sum(0) / n.clamp_min(1)
    return torch.where(n >= min_tasks, mean, torch.full_like(mean, float("nan"))).to(torch.float32)


def generalist_order(scores: torch.Tensor) -> list[int]:
    """Experts with a generalist score, best (lowest) first; ties keep their position."""
    vals = scores.tolist()
    return sorted((j for j, v in enumerate(vals) if v == v), key=lambda j: (vals[j], j))


def shortlist_with_generalists(stage1: Sequence[int], by_prior: Sequence[int], shortlist: int,
                               generalists: int) -> list[int]:
    """The first ``shortlist`` of ``stage1``, then the first ``generalists`` of ``by_prior`` not among them.

    ``by_prior`` entries not in ``stage1`` (incompatible, filtered out) are skipped. This is the
    shortlist stage 2 scores (``rerank.py``) when every expert can be scored; there, one whose
    weights cannot be loaded is passed over for the next generalist.
    """
    head = list(stage1[:shortlist])
    ranked = set(stage1)
    for j in by_prior:
        if len(head) >= shortlist + generalists:
            break
        if j in ranked and j not in head:
            head.append(j)
    return head


__all__ = ["BEST_ERROR_FLOOR", "MIN_TASKS", "generalist_order", "generalist_scores", "shortlist_with_generalists"]
