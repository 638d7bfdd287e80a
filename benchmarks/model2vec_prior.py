"""The static prior in MODEL2VEC's offsets: how much, and chosen how.

    python -m benchmarks.model2vec_prior    # ~15 min on 2 CPUs; writes benchmarks/results/model2vec_prior.{json,md}

MODEL2VEC ``bias=layer`` plus ``beta * g_j``, where ``g_j`` is expert j's generalist score (mean
relative error increase over the training tasks), on the committed packs of the three ground-truth
replicates and the four meta-tasks of ``benchmarks.selection_novel`` (loo, mixed, lodo, novel).
Rows:

- every fixed ``beta`` of the library's grid (chosen with hindsight, so an upper bound of what a
  fixed weight could do on these tasks, not a result);
- ``beta`` cross-validated on the training tasks of each test task, with two ways of holding
  tasks out: the zoo's true pools (``pool``; a hub does not name them) and average-linkage clusters
  of the training tasks under d_sym (``cluster``: what the library does, ``SelectorConfig.prior="cv"``).

The cluster rows use the library's pieces (``task_groups``, ``centred``, ``chosen_error_sum``, the
grid) with the layer selectors cached across folds; ``tests/test_prior_offset.py`` checks that
``train_model2vec(prior="cv")`` chooses the same way. Random folds were tried too (exploratory,
slower, as they share no training set): worse than clusters on every replicate and meta-task run.
Scores are relative error increases (own errors, ratio of means) per replicate and their mean.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch

from benchmarks import selection_novel as sn
from benchmarks import selection_quality as sq
from t2v_hub.selection.generalist import generalist_scores
from t2v_hub.selection.model2vec import SelectorConfig
from t2v_hub.selection.prior_offset import PRIOR_GRID, centred, chosen_error_sum, task_groups
from t2v_hub.selection.training import train_model2vec

METAS = ("loo", "mixed", "lodo", "novel")
FOLDS = 4


def _rel(data: dict[str, Any], scores: torch.Tensor, keep: torch.Tensor, exclude: torch.Tensor) -> float:
    E, ex = data["errors"][keep], exclude[keep]
    best = torch.where(ex, torch.full_like(E, float("inf")), E).min(1).values
    chosen = sq._chosen_errors(E, sq._mask(scores[keep], ex))
    return 100 * float((chosen.mean() - best.mean()) / best.mean())


def _groups(kind: str, train: list[int], X: torch.Tensor, pools: list[str]) -> list[list[int]]:
    if kind == "pool":
        return [[j for j in train if pools[j] == p] for p in sorted({pools[j] for j in train})]
    return [[train[a] for a in grp] for grp in task_groups(X[train], FOLDS)]  # the library's clusters


def _best_beta(errors: torch.Tensor, parts: list[tuple[list[int], torch.Tensor, torch.Tensor]]) -> float:
    """The grid's beta of lowest summed chosen error over the held-out groups (ties: the smaller)."""
    def total(b: float) -> float:
        return sum(chosen_error_sum(errors[h], s + b * g[None, :]) for h, g, s in parts)

    return min(PRIOR_GRID, key=lambda b: (round(total(b), 9), b))


def one(data: dict[str, Any], meta: str) -> tuple[dict[str, float], dict[str, list[float]]]:
    keep, exclude, lodo = sn._candidates(data, meta)
    X, F, t0, pools = data["X"], data["F"], data["t0"], data["pools"]
    masked = data["errors"].clone()
    masked[exclude] = float("nan")
    T = X.shape[0]
    cfg = SelectorConfig(alpha=sq.ALPHA, bias="layer", prior="none")
    cache: dict[tuple[int, ...], torch.Tensor] = {}

    def layer(rows: list[int]) -> torch.Tensor:
        """Scores of every task under a layer selector trained on ``rows`` (cached: folds share them)."""
        if tuple(rows) not in cache:
            sel = train_model2vec(X[rows], F, masked[rows], t0, cfg, layers=data["layers"])
            cache[tuple(rows)] = sel.scores(X, sel.expert_ids, F)
        return cache[tuple(rows)]

    fixed = {b: torch.full(masked.shape, float("nan")) for b in PRIOR_GRID}
    cv = {k: torch.full(masked.shape, float("nan")) for k in ("pool", "cluster")}
    betas: dict[str, list[float]] = {k: [] for k in cv}
    for i in range(T):
        if not keep[i]:
            continue
        train = [j for j in range(T) if j != i and (not lodo or pools[j] != pools[i])]
        g = centred(generalist_scores(masked[train]))
        base = layer(train)[i]
        for b in PRIOR_GRID:
            fixed[b][i] = base + b * g
        for kind in cv:
            parts = []
            for held in _groups(kind, train, X, pools):
                inner = [j for j in train if j not in held]
                parts.append((held, centred(generalist_scores(masked[inner])), layer(inner)[held]))
            beta = _best_beta(masked, parts)
            betas[kind].append(beta)
            cv[kind][i] = base + beta * g
    rows = {f"beta={b:g} (hindsight)": _rel(data, s, keep, exclude) for b, s in fixed.items()}
    rows.update({f"cv over {k}": _rel(data, s, keep, exclude) for k, s in cv.items()})
    return rows, betas


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"grid": list(PRIOR_GRID), "folds": FOLDS, "meta_tasks": {}}
    t = time.time()
    for meta in METAS:
        per: dict[str, dict[str, float]] = {}
        chosen: dict[str, dict[str, list[float]]] = {}
        for pack in sq.REPLICATES:
            rep = sn.LABELS[pack.name]
            rows, betas = one(sq.load(pack), meta)
            for name, v in rows.items():
                per.setdefault(name, {})[rep] = round(v, 2)
            chosen[rep] = {k: sorted(set(v)) for k, v in betas.items()}
            print(f"{meta} {rep}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
        for v in per.values():
            v["mean"] = round(sum(v.values()) / len(v), 2)
        out["meta_tasks"][meta] = {"methods": per, "betas_chosen": chosen}
    return out


def write(res: dict[str, Any]) -> None:
    (sq.RESULTS / "model2vec_prior.json").write_text(json.dumps(res, indent=1))
    names = list(res["meta_tasks"]["loo"]["methods"])
    lines = ["# MODEL2VEC bias=layer + beta x generalist score", "",
             "Relative error increase (own errors), replicate mean (A / B / C); `python -m benchmarks.model2vec_prior`.",
             "", "| beta | " + " | ".join(METAS) + " |", "|---|" + "---|" * len(METAS)]
    for name in names:
        cells = []
        for meta in METAS:
            v = res["meta_tasks"][meta]["methods"][name]
            cells.append(f"{v['mean']:+.1f}% ({v['A']:+.1f} / {v['B']:+.1f} / {v['C']:+.1f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (sq.RESULTS / "model2vec_prior.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    write(run())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
