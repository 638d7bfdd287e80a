"""Selection on domains the hub has no expert for, and against the mean of three ground truths.

    python -m benchmarks.selection_novel      # ~3 min on 2 CPUs; writes benchmarks/results/selection_novel.{json,md}

Two gaps of ``benchmarks.selection_quality`` that this closes, from the same committed packs
(nothing is recomputed from images):

- **``novel``, a fourth meta-task.** ``lodo`` trains the learned methods without the test task's
  pool but still offers that pool's experts as candidates, so d_sym can always find "the same
  images". A task from a domain no pool uses (the held-out set the issue describes) has no such
  expert. ``novel`` removes them: every one of the 36 tasks, candidates only the experts of the
  *other* pools (8 of 12 here), learned methods trained only on tasks of other pools, and the
  static prior's mean error taken over those cross-domain pairs only, as the test task sees them.
- **A less noisy ground truth.** Each replicate (A, B, C: the experts fine-tuned three times)
  gives its own errors, and one run's best expert scored on another run costs +10-24%: that is
  the noise of a single fine-tuning, not of any method. Beside each replicate's own errors
  (``own``: what a user downloading *that* network gets) every method is also scored against the
  mean error of the three runs (``mean``: the expected error of an expert trained with this
  recipe, which is what a method that sees tasks, not networks, can predict). Each method still
  chooses from one replicate's data (its LogME, its errors for training), as it would on a hub.

Reported per meta-task: each replicate's relative error increase (ratio of means) and their mean,
with 95% paired-bootstrap intervals of the replicate-mean differences that matter (tasks
resampled jointly across the replicates, 2,000 resamples).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

from benchmarks import selection_quality as sq
from t2v_hub.selection.distances import cdist

KS = (1, 2, 3, 4, 5, 12)  # 12: every candidate, i.e. LogME on all of them
LABELS = {p.name: label for p, label in zip(sq.REPLICATES, "ABC", strict=True)}
GEN = "two_stage[d_sym, K=3, +1 generalist]"  # recommend's default with a selector
PRIOR_CV = "model2vec[bias=layer, prior=cv]"  # the selector's default since the prior offset
PAIRS = (("two_stage[d_sym, K=3]", "logme_all"), (GEN, "logme_all"), (GEN, "two_stage[d_sym, K=4]"),
         (GEN, "two_stage[d_sym, K=3]"), ("two_stage[d_sym, K=3]", "static_prior"),
         ("model2vec[bias=layer]", "static_prior"), ("model2vec[bias=layer]", "d_sym"),
         (PRIOR_CV, "static_prior"), (PRIOR_CV, "d_sym"), (PRIOR_CV, "model2vec[bias=layer]"))


def _candidates(data: dict[str, Any], meta: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(rows kept, excluded task x expert pairs, train without the test task's pool) of one meta-task."""
    tasks, experts, pools = data["tasks"], data["experts"], data["pools"]
    own = torch.tensor([[e == t for e in experts] for t in tasks])
    is_expert = torch.tensor(data["is_expert_task"])
    if meta == "novel":
        epool = [pools[tasks.index(e)] for e in experts]
        other = torch.tensor([[epool[j] == pools[i] for j in range(len(experts))] for i in range(len(tasks))])
        return torch.ones_like(is_expert), other, True
    keep = {"loo": is_expert, "mixed": ~is_expert, "lodo": torch.ones_like(is_expert)}[meta]
    return keep, own, meta == "lodo"


def _normalised(M: torch.Tensor, kind: str) -> torch.Tensor:
    """Training errors (NaN = unknown) put on a per-task scale, for the generalist-definition rows."""
    known = torch.isfinite(M)
    best = torch.where(known, M, torch.full_like(M, float("inf"))).min(1, keepdim=True).values
    if kind == "floor 1e-2":  # the library's relative increase, with a floor at 1% error instead of 0.1%
        return (M - best) / best.clamp_min(1e-2)
    if kind == "mean rank":
        return torch.where(known, torch.where(known, M, torch.full_like(M, float("inf"))).argsort(1).argsort(1).float(), M)
    if kind == "z-score":
        mu = torch.nanmean(M, 1, keepdim=True)
        return (M - mu) / torch.nanmean((M - mu) ** 2, 1, keepdim=True).sqrt().clamp_min(1e-6)
    if kind == "plain error":  # the static prior's own ranking
        return M
    raise KeyError(kind)


GENERALIST_VARIANTS = ("floor 1e-2", "mean rank", "z-score", "plain error")


def generalist_variants(data: dict[str, Any], exclude: torch.Tensor, lodo: bool) -> dict[str, torch.Tensor]:
    """Other definitions of the generalist score than the library's, each from the same training tasks
    as every learned method (row i without task i; lodo: without its pool): is the slot's gain one
    definition's luck?"""
    E, pools = data["errors"].clone(), data["pools"]
    E[exclude] = float("nan")
    T = E.shape[0]
    out = {k: torch.full(E.shape, float("nan")) for k in GENERALIST_VARIANTS}
    for i in range(T):
        train = torch.tensor([j != i and (not lodo or pools[j] != pools[i]) for j in range(T)])
        for k in GENERALIST_VARIANTS:
            out[k][i] = torch.nanmean(_normalised(E[train], k), 0)
    return out


def choices(data: dict[str, Any], meta: str,
            trained: dict[str, torch.Tensor] | None = None
            ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Scores (lower = better) of every method on one replicate and meta-task, the rows kept, the
    exclusions and the learned methods' scores.

    ``trained``: the learned methods' scores when already computed for the same training sets
    (loo and mixed share theirs).
    """
    keep, exclude, lodo = _candidates(data, meta)
    d_sym = cdist(data["F"], data["X"]).T
    logme = data["logme"]
    if trained is None:
        trained = sq.learned(data, exclude, lodo=lodo, model2vec=True, only=("layer", "prior"))
    scores = {"static_prior": trained["static_prior"], "d_sym": d_sym,
              "model2vec[bias=layer]": trained["model2vec[bias=layer]"], PRIOR_CV: trained[PRIOR_CV],
              "logme_all": -logme}
    if "knn" in data["transfer"]:
        scores["knn_all"] = -data["transfer"]["knn"]
    short = sq._mask(d_sym, exclude)
    for k in KS:
        scores[f"two_stage[d_sym, K={k}]"] = sq.two_stage(short, logme, k)
    gen = sq._mask(trained["generalist"], exclude)
    for k in (2, 3):
        scores[f"two_stage[d_sym, K={k}, +1 generalist]"] = sq.two_stage_generalist(short, gen, logme, k)
    scores["shortlist_oracle[d_sym, K=3, +1 generalist] (own errors)"] = sq.two_stage_generalist(
        short, gen, -data["errors"], 3)
    for kind, g in generalist_variants(data, exclude, lodo).items():
        scores[f"two_stage[d_sym, K=3, +1 generalist by {kind}]"] = sq.two_stage_generalist(
            short, sq._mask(g, exclude), logme, 3)
    if "knn" in data["transfer"]:
        scores["two_stage[d_sym, K=3, knn]"] = sq.two_stage(short, data["transfer"]["knn"], 3)
    for k in (3, 4):
        scores[f"shortlist_oracle[d_sym, K={k}] (own errors)"] = sq.shortlist_oracle(short, data["errors"], k)
    return scores, keep, exclude, trained


def losses_to(data: dict[str, Any], ours: torch.Tensor, theirs: torch.Tensor, keep: torch.Tensor,
              exclude: torch.Tensor) -> list[dict[str, Any]]:
    """The tasks where ``ours`` chooses a worse expert than ``theirs`` (own errors): what, and what it costs
    in points of that task's relative error increase; ``in_shortlist``: whether their pick ranked in our top 4
    (shortlist of 3 + 1 generalist), i.e. whether stage 2 or the shortlist missed it."""
    E = data["errors"]
    out = []
    for i in keep.nonzero().flatten().tolist():
        a = int(sq._mask(ours[i : i + 1], exclude[i : i + 1]).nan_to_num(nan=float("inf")).argmin())
        b = int(sq._mask(theirs[i : i + 1], exclude[i : i + 1]).nan_to_num(nan=float("inf")).argmin())
        if float(E[i, a]) > float(E[i, b]) + 1e-9:
            best = float(torch.where(exclude[i], torch.full_like(E[i], float("inf")), E[i]).min())
            out.append({"task": data["tasks"][i], "ours": data["experts"][a], "theirs": data["experts"][b],
                        "points": round(100 * (float(E[i, a]) - float(E[i, b])) / best, 1),
                        "in_shortlist": float(ours[i, b]) < 4})
    return out


def _passes(name: str, candidates: int) -> int:
    """Expert forward passes over the task's images one query costs (TASK2VEC's probe pass not counted)."""
    if name.endswith("_all"):
        return candidates
    m = re.search(r"K=(\d+)", name)
    g = re.search(r"\+(\d+) generalist", name)
    return min(int(m.group(1)) + (int(g.group(1)) if g else 0), candidates) if m else 0


def _rel(chosen: torch.Tensor, best: torch.Tensor) -> float:
    return float((chosen.mean() - best.mean()) / best.mean())


def run(packs: tuple[Path, ...] = sq.REPLICATES, n_boot: int = 2000) -> dict[str, Any]:
    datas = {LABELS.get(p.name, p.name): sq.load(p) for p in packs if p.is_file()}
    if len(datas) < 2:
        raise SystemExit("need at least two ground-truth replicates (zoo_embeddings_small*.safetensors)")
    first = next(iter(datas.values()))
    if any(d["tasks"] != first["tasks"] or d["experts"] != first["experts"] for d in datas.values()):
        raise SystemExit("the replicates' packs hold different tasks or experts")
    mean_errors = torch.stack([d["errors"] for d in datas.values()]).mean(0)
    out: dict[str, Any] = {"replicates": list(datas), "meta_tasks": {}}
    g = torch.Generator().manual_seed(0)
    shared: dict[str, dict[str, torch.Tensor]] = {}  # replicate -> loo's learned scores, reused by mixed
    for meta in ("loo", "mixed", "lodo", "novel"):
        per: dict[str, dict[str, dict[str, float]]] = {"own": {}, "mean": {}}
        top1: dict[str, dict[str, list[float]]] = {"own": {}, "mean": {}}
        picked: dict[str, dict[str, list[torch.Tensor]]] = {"own": {}, "mean": {}}
        bests: dict[str, list[torch.Tensor]] = {"own": [], "mean": []}
        lost: dict[str, list[dict[str, Any]]] = {}
        n_cand = 0
        for rep, data in datas.items():
            scores, keep, exclude, trained = choices(data, meta, shared.get(rep) if meta == "mixed" else None)
            if meta == "loo":
                shared[rep] = trained
            n_cand = int((~exclude[keep]).sum(1).float().mean().round())
            lost.setdefault(rep, losses_to(data, scores[GEN], scores["logme_all"], keep, exclude))
            for truth, G in (("own", data["errors"]), ("mean", mean_errors)):
                Gk, ex = G[keep], exclude[keep]
                best = torch.where(ex, torch.full_like(Gk, float("inf")), Gk).min(1).values
                bests[truth].append(best)
                for name, sc in scores.items():
                    ch = sq._chosen_errors(Gk, sq._mask(sc[keep], ex))
                    per[truth].setdefault(name, {})[rep] = _rel(ch, best)
                    top1[truth].setdefault(name, []).append(float((ch <= best + 1e-9).float().mean()))
                    picked[truth].setdefault(name, []).append(ch)
        T = int(bests["own"][0].numel())
        res: dict[str, Any] = {"num_tasks": T, "candidates_per_task": n_cand, "ground_truths": {},
                               f"tasks where {GEN} is worse than logme_all (own errors)": lost}
        for truth in ("own", "mean"):
            methods = {name: {**v, "mean": sum(v.values()) / len(v),
                              "top1_mean": sum(top1[truth][name]) / len(top1[truth][name]),
                              "forward_passes_per_query": _passes(name, n_cand)} for name, v in per[truth].items()}
            boot: dict[str, Any] = {}
            idxs = [torch.randint(0, T, (T,), generator=g) for _ in range(n_boot)]
            for a, b in PAIRS:
                if a not in picked[truth] or b not in picked[truth] or len(picked[truth][b]) != len(datas):
                    continue
                diff = [sum(_rel(ca[i], bt[i]) - _rel(cb[i], bt[i]) for ca, cb, bt in
                            zip(picked[truth][a], picked[truth][b], bests[truth], strict=True)) / len(datas)
                        for i in idxs]
                d = torch.tensor(diff)
                boot[f"{a} - {b}"] = {"difference": methods[a]["mean"] - methods[b]["mean"],
                                      "ci95": [float(d.quantile(0.025)), float(d.quantile(0.975))]}
            res["ground_truths"][truth] = {"methods": methods, "paired_bootstrap_replicate_mean": boot}
        out["meta_tasks"][meta] = res
    return out


def write(res: dict[str, Any], stem: str = "selection_novel") -> None:
    sq.RESULTS.mkdir(parents=True, exist_ok=True)
    (sq.RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    reps = res["replicates"]
    lines = ["# Selection: novel domains, and three ground-truth replicates", "",
             f"Replicates: {', '.join(reps)} (the packs of `selection_quality.REPLICATES`). Relative error increase over the best candidate (ratio of means).", ""]
    for meta, r in res["meta_tasks"].items():
        for truth, t in r["ground_truths"].items():
            lines += [f"## {meta} ({r['num_tasks']} tasks, {r['candidates_per_task']} candidates), "
                      f"{truth} errors", "",
                      "| method | " + " | ".join(reps) + " | mean | top-1 (mean) | experts run / query |",
                      "|---|" + "---|" * (len(reps) + 3)]
            for name, m in t["methods"].items():
                cells = [f"{100 * m[rp]:+.1f}%" if rp in m else "-" for rp in reps]
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * m['mean']:+.1f}% | {m['top1_mean']:.2f} | "
                             f"{m['forward_passes_per_query']} |")
            lines += ["", "| difference of replicate means | value | 95% paired bootstrap |", "|---|---|---|"]
            for k, v in t["paired_bootstrap_replicate_mean"].items():
                lines.append(f"| {k} | {100 * v['difference']:+.1f} pts | [{100 * v['ci95'][0]:+.1f}, "
                             f"{100 * v['ci95'][1]:+.1f}] |")
            lines.append("")
        key = f"tasks where {GEN} is worse than logme_all (own errors)"
        lines += [f"Tasks where the default (d_sym top 3 + 1 generalist, then LogME) chooses worse than LogME on "
                  f"all candidates ({meta}, own errors; points of the task's relative error increase; whether "
                  "LogME-all's pick was in the shortlist):", ""]
        for rep, items in r.get(key, {}).items():
            shown = "; ".join(f"{x['task']}: {x['ours']} instead of {x['theirs']}, {x['points']:+.1f} pts"
                              f"{'' if x['in_shortlist'] else ', not shortlisted'}" for x in items) or "none"
            lines.append(f"- {rep}: {shown}")
        lines.append("")
    (sq.RESULTS / f"{stem}.md").write_text("\n".join(lines))
    _plot(res, sq.RESULTS / f"{stem}_frontier.png")


def _plot(res: dict[str, Any], out: Path) -> None:
    """Quality against cost per meta-task: replicate-mean error increase (own errors) over expert passes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    metas = list(res["meta_tasks"])
    fig, axes = plt.subplots(1, len(metas), figsize=(4 * len(metas), 4), sharey=True)
    for ax, meta in zip(axes, metas, strict=True):
        m = res["meta_tasks"][meta]["ground_truths"]["own"]["methods"]
        ks = [k for k in KS if f"two_stage[d_sym, K={k}]" in m]
        ax.plot([m[f"two_stage[d_sym, K={k}]"]["forward_passes_per_query"] for k in ks],
                [100 * m[f"two_stage[d_sym, K={k}]"]["mean"] for k in ks], "o-", label="d_sym shortlist, then LogME")
        for name, marker, label in ((GEN, "s", "d_sym top 3 + 1 generalist, then LogME"),
                                    ("two_stage[d_sym, K=2, +1 generalist]", "v", "d_sym top 2 + 1 generalist"),
                                    ("d_sym", "^", "d_sym"), ("model2vec[bias=layer]", "X", "MODEL2VEC layer"),
                                    ("static_prior", "D", "static prior"), ("logme_all", "*", "LogME, all"),
                                    ("knn_all", "p", "kNN, all (B, C)")):
            if name in m:
                ax.plot([m[name]["forward_passes_per_query"]], [100 * m[name]["mean"]], marker, markersize=9,
                        label=label, alpha=0.8)
        r = res["meta_tasks"][meta]
        ax.set_title(f"{meta} ({r['num_tasks']} tasks, {r['candidates_per_task']} candidates)")
        ax.set_xlabel("expert forward passes per query")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("relative error increase, mean of replicates (%)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default %(default)s)")
    ap.add_argument("--plot-only", action="store_true", help="redraw the frontier from the committed results")
    args = ap.parse_args(argv)
    if args.plot_only:
        _plot(json.loads((sq.RESULTS / "selection_novel.json").read_text()), sq.RESULTS / "selection_novel_frontier.png")
        return 0
    write(run(n_boot=args.boot))
    print((sq.RESULTS / "selection_novel.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
