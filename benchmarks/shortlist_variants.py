"""Other ways to build the two-stage shortlist than d_sym's top 3 + the best generalist.

    python -m benchmarks.shortlist_variants   # ~4 min on 2 CPUs; writes benchmarks/results/shortlist_variants.{json,md}

``benchmarks.selection_novel`` shows that what is left of the gap to LogME on all experts is the
shortlist: in every loss, LogME-all's pick is outside the 4 experts scored. This measures the
shortlist rules that could catch those experts at (about) the same cost, on the same committed packs,
meta-tasks and training sets as ``selection_novel`` (nothing is recomputed from images):

- ``mmr``: diversity. d_sym's nearest expert, then greedily the expert minimising
  ``d_sym(task, e) - lam * min_{c chosen} d_sym(e, c)`` (maximal marginal relevance), then the generalist.
- ``ratio``: an adaptive K. Every expert within ``(1 + r)`` of the nearest distance, between ``kmin`` and
  ``kmax`` of them, then the generalist: a task far from every expert gets a longer shortlist.
- ``neighbour generalist``: the slot's expert chosen by its mean relative error increase over the
  ``k`` training tasks nearest the test task (collaborative filtering) instead of over all of them.
- ``d_sym + MODEL2VEC`` / ``d_sym + static``: one slot given to the learned selector's or the static
  prior's first choice.

Each row is the gap to LogME on all candidates (own errors, points of relative error increase) per
replicate and its mean, and the mean number of experts scored per query.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks import selection_novel as sn
from benchmarks import selection_quality as sq
from t2v_hub.selection.distances import cdist
from t2v_hub.selection.generalist import BEST_ERROR_FLOOR, shortlist_with_generalists

METAS = ("loo", "mixed", "lodo", "novel")
# A shortlist rule: (d_sym order, per-slot orders by name, d_sym row, expert x expert d_sym) -> shortlist.
Rule = Callable[[list[int], dict[str, list[int]], torch.Tensor, torch.Tensor], list[int]]


def _order(row: torch.Tensor) -> list[int]:
    s = torch.nan_to_num(row, nan=float("inf"))
    return [j for j in torch.argsort(s, stable=True).tolist() if math.isfinite(float(s[j]))]


def _with_generalist(chosen: list[int], order: list[int], by: dict[str, list[int]], g: int = 1) -> list[int]:
    return shortlist_with_generalists(chosen + [j for j in order if j not in chosen], by["generalist"], len(chosen), g)


def mmr(k: int, lam: float) -> Rule:
    def rule(order: list[int], by: dict[str, list[int]], s: torch.Tensor, D: torch.Tensor) -> list[int]:
        chosen = order[:1]
        while len(chosen) < min(k, len(order)):
            chosen.append(min((j for j in order if j not in chosen),
                              key=lambda j: float(s[j]) - lam * min(float(D[j, c]) for c in chosen)))
        return _with_generalist(chosen, order, by)
    return rule


def ratio(r: float, kmin: int, kmax: int) -> Rule:
    def rule(order: list[int], by: dict[str, list[int]], s: torch.Tensor, D: torch.Tensor) -> list[int]:
        near = [j for j in order if float(s[j]) <= float(s[order[0]]) * (1 + r)][:kmax]
        return _with_generalist(near if len(near) >= kmin else order[:kmin], order, by)
    return rule


def slots(*spec: tuple[str, int]) -> Rule:
    """The first ``n`` of each named order in turn, skipping experts already taken."""
    def rule(order: list[int], by: dict[str, list[int]], s: torch.Tensor, D: torch.Tensor) -> list[int]:
        short: list[int] = []
        for name, n in spec:
            src: Sequence[int] = order if name == "d_sym" else by[name]
            short += [j for j in src if j in order and j not in short][:n]
        return short
    return rule


RULES: dict[str, Rule] = {
    "d_sym top 3 + generalist (the default)": slots(("d_sym", 3), ("generalist", 1)),
    **{f"mmr lam={lam}": mmr(3, lam) for lam in (0.1, 0.25, 0.5, 1.0)},
    **{f"ratio r={r}, K {a}-{b}": ratio(r, a, b) for r in (0.05, 0.1, 0.2, 0.5) for a, b in ((2, 6), (3, 6))},
    **{f"d_sym top 3 + neighbour generalist k={k}": slots(("d_sym", 3), (f"neighbour{k}", 1)) for k in (3, 5, 12)},
    **{f"d_sym top 2 + generalist + neighbour generalist k={k}":
       slots(("d_sym", 2), ("generalist", 1), (f"neighbour{k}", 1)) for k in (3, 5, 12)},
    "d_sym top 2 + MODEL2VEC top 1 + generalist": slots(("d_sym", 2), ("model2vec", 1), ("generalist", 1)),
    "d_sym top 3 + MODEL2VEC top 1": slots(("d_sym", 3), ("model2vec", 1)),
    "d_sym top 2 + static top 1 + generalist": slots(("d_sym", 2), ("static", 1), ("generalist", 1)),
}
NEIGHBOURS = (3, 5, 12)


def neighbour_generalist(data: dict[str, Any], exclude: torch.Tensor, lodo: bool, k: int) -> torch.Tensor:
    """Each expert's mean relative error increase over the ``k`` training tasks nearest the test task."""
    E = data["errors"].clone()
    E[exclude] = float("nan")
    pools, T = data["pools"], E.shape[0]
    Dt = cdist(data["X"], data["X"])
    out = torch.full(E.shape, float("nan"))
    for i in range(T):
        train = [j for j in range(T) if j != i and (not lodo or pools[j] != pools[i])]
        R = E[train]
        known = torch.isfinite(R)
        best = torch.where(known, R, torch.full_like(R, float("inf"))).min(1, keepdim=True).values
        R = (R - best) / best.clamp_min(BEST_ERROR_FLOOR)
        w = torch.zeros(len(train))
        w[Dt[i, train].argsort()[:k]] = 1.0
        out[i] = (torch.where(known, R, 0.0) * w[:, None]).sum(0) / (known * w[:, None]).sum(0).clamp_min(1e-12)
    return out


def run() -> dict[str, Any]:
    datas = {label: sq.load(p) for p, label in zip(sq.REPLICATES, "ABC", strict=True) if p.is_file()}
    if len(datas) < 2:
        raise SystemExit("need at least two ground-truth replicates (zoo_embeddings_small*.safetensors)")
    gaps: dict[str, dict[str, dict[str, float]]] = {m: {} for m in METAS}
    passes: dict[str, dict[str, list[float]]] = {m: {} for m in METAS}
    trained: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for meta in METAS:
        for rep, data in datas.items():
            keep, exclude, lodo = sn._candidates(data, meta)
            key = (rep, "loo" if meta == "mixed" else meta)  # mixed trains on the same sets as loo
            if key not in trained:
                trained[key] = sq.learned(data, exclude, lodo=lodo, model2vec=True, only=("layer",))
            tr = trained[key]
            scores = {"generalist": tr["generalist"], "model2vec": tr["model2vec[bias=layer]"],
                      "static": tr["static_prior"],
                      **{f"neighbour{k}": neighbour_generalist(data, exclude, lodo, k) for k in NEIGHBOURS}}
            d_sym = sq._mask(cdist(data["F"], data["X"]).T, exclude)
            D = cdist(data["F"], data["F"])
            E, logme = data["errors"][keep], data["logme"]
            ex = exclude[keep]
            best = torch.where(ex, torch.full_like(E, float("inf")), E).min(1).values
            logme_all = sq._chosen_errors(E, sq._mask(-logme[keep], ex))
            rows = keep.nonzero().flatten().tolist()
            for name, rule in RULES.items():
                ranks = torch.full_like(d_sym, float("nan"))
                sizes = []
                for i in rows:
                    order = _order(d_sym[i])
                    short = rule(order, {k: _order(sq._mask(v, exclude)[i]) for k, v in scores.items()}, d_sym[i], D)
                    sizes.append(len(short))
                    for r, j in enumerate(sorted(short, key=lambda j: -float(logme[i, j])) +
                                          [j for j in order if j not in short]):
                        ranks[i, j] = float(r)
                chosen = sq._chosen_errors(E, ranks[keep])
                gaps[meta].setdefault(name, {})[rep] = 100 * (sn._rel(chosen, best) - sn._rel(logme_all, best))
                passes[meta].setdefault(name, []).append(sum(sizes) / len(sizes))
    out: dict[str, Any] = {"replicates": list(datas), "unit": "points of relative error increase above LogME on all "
                           "candidates (own errors); passes: experts scored per query", "meta_tasks": {}}
    for meta in METAS:
        out["meta_tasks"][meta] = {name: {**g, "mean": sum(g.values()) / len(g),
                                          "passes": sum(passes[meta][name]) / len(passes[meta][name])}
                                   for name, g in gaps[meta].items()}
    return out


def write(res: dict[str, Any]) -> str:
    sq.RESULTS.mkdir(parents=True, exist_ok=True)
    (sq.RESULTS / "shortlist_variants.json").write_text(json.dumps(res, indent=1) + "\n")
    reps = res["replicates"]
    lines = ["# Shortlist variants: gap to LogME on all candidates", "",
             f"Points of relative error increase above LogME-all (own errors), replicates {', '.join(reps)} and "
             "their mean; passes = experts scored per query (mean).", "",
             "| rule | " + " | ".join(f"{m} mean ({'/'.join(reps)}) | passes" for m in METAS) + " |",
             "|---|" + "---:|---:|" * len(METAS)]
    for name in RULES:
        cells = []
        for meta in METAS:
            r = res["meta_tasks"][meta][name]
            cells.append(f"{r['mean']:+.1f} ({'/'.join(f'{r[p]:+.1f}' for p in reps)}) | {r['passes']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (sq.RESULTS / "shortlist_variants.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    print(write(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
