"""Selection methods compared on the zoo's ground truth, and their metrics.

Scores are (tasks x experts) matrices, lower = better (LogME is negated). Metrics come
from :mod:`t2v_hub.selection.metrics` (relative error increase over the best
candidate as a ratio of means, as in the paper's Table 1; per-task mean ratio;
weighted Kendall tau; top-1) and MODEL2VEC from :mod:`t2v_hub.selection.model2vec`
(leave-one-out over tasks). Candidates are the fine-tuned experts; "always the
ImageNet model" is a baseline measured against the same best candidate, as in the
paper, where the generic model has no task embedding.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from t2v_hub.selection.distances import cdist, cdist_asym
from t2v_hub.selection.metrics import chance_baseline, evaluate_selection, loo_mean_error_scores
from t2v_hub.selection.model2vec import SelectorConfig
from t2v_hub.selection.training import loo_model2vec


def _clean(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def generic_baseline(errors: torch.Tensor, generic_errors: torch.Tensor, exclude: torch.Tensor) -> dict[str, Any]:
    """'Always the ImageNet model': its error against the best candidate of each task."""
    err = errors.double().clone()
    err[exclude] = float("nan")
    best = torch.where(torch.isnan(err), torch.full((), math.inf, dtype=err.dtype), err).min(1).values
    g = generic_errors.double()
    mc, mb = float(g.mean()), float(best.mean())
    ratios = [(float(a) - float(b)) / float(b) for a, b in zip(g, best, strict=True) if float(b) > 0]
    return {
        "relative_error_increase": (mc - mb) / mb if mb > 0 else math.nan,
        "relative_error_increase_per_task": float(np.mean(ratios)) if ratios else math.nan,
        "weighted_tau": math.nan,
        "top1": float((g <= best).double().mean()),
        "mean_chosen_error": mc,
        "mean_best_error": mb,
        "num_tasks": float(len(g)),
    }


def compare(
    errors: torch.Tensor,  # (T, E) candidates' test errors
    generic_errors: torch.Tensor,  # (T,)
    exclude: torch.Tensor,  # (T, E) bool: never select (expert trained on the task)
    task_embs: dict[str, torch.Tensor],  # method -> (T, dim)
    expert_embs: dict[str, torch.Tensor],  # method -> (E, dim)
    trivial: dict[str, torch.Tensor],  # method -> (dim,)
    logme: torch.Tensor,  # (T, E) higher = better
    alphas: tuple[float, ...],
    report_alpha: float,
    m2v_epochs: int = 81,
) -> dict[str, Any]:
    """Every method's metrics on one meta-task, plus the alpha sweep and the per-task choices."""
    methods: dict[str, dict[str, Any]] = {}
    choices: dict[str, list[int]] = {}

    def run(name: str, scores: torch.Tensor) -> None:
        # inf (e.g. a static score with no other task to learn from) ranks last but still counts
        s = torch.nan_to_num(scores.clone().float(), nan=float("nan"), posinf=1e30, neginf=-1e30)
        s[exclude] = float("nan")
        methods[name] = _clean(evaluate_selection(errors, s, exclude))
        choices[name] = [int(torch.argmin(torch.nan_to_num(row, nan=float("inf")))) for row in s]

    methods["chance"] = _clean(chance_baseline(errors, exclude))
    methods["generic_imagenet"] = _clean(generic_baseline(errors, generic_errors, exclude))
    masked = errors.clone()
    masked[exclude] = float("nan")
    run("static_best_on_other_tasks", loo_mean_error_scores(masked))
    sweep: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    for method, X in task_embs.items():
        F, t0 = expert_embs[method], trivial[method]
        tic = time.perf_counter()
        run(f"d_sym[{method}]", cdist(F, X).T)
        timings[f"d_sym[{method}]"] = time.perf_counter() - tic
        sweep[method] = {}
        for a in alphas:
            scores = cdist_asym(F, X, t0, alpha=a).T
            sweep[method][str(a)] = _clean(evaluate_selection(errors, _masked(scores, exclude), exclude))
        run(f"d_asym[{method}]", cdist_asym(F, X, t0, alpha=report_alpha).T)
        tic = time.perf_counter()
        m2v = loo_model2vec(X, F, masked, t0, SelectorConfig(alpha=report_alpha, epochs=m2v_epochs, bias="filter"))
        timings[f"model2vec_loo_train[{method}]"] = time.perf_counter() - tic
        run(f"model2vec[{method}]", m2v)
    run("logme", -logme)
    run("oracle", errors)
    return {"methods": methods, "alpha_sweep": sweep, "choices": choices, "timings": timings}


def _masked(scores: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    s = scores.clone().float()
    s[exclude] = float("nan")
    return s
