"""Selection quality on the zoo's expert tasks: leave-one-out and leave-one-domain-out, one- and two-stage.

    python -m benchmarks.selection_quality      # ~2 min on 2 CPUs; writes benchmarks/results/selection_quality.*

Inputs (nothing is recomputed from images): the reproduction's ground truth in
``benchmarks/results/reproduce_small.json`` (the error of a linear probe on every
expert's features for every task, and LogME of every expert for every task), and the
TASK2VEC embeddings of the 12 expert tasks as the demo zoo carries them
(``examples/zoo``). Candidates are the 12 fine-tuned experts; the expert trained on
the task itself is never a candidate ("pool_loo" of the reproduction).

Meta-tasks for the learned methods (the static prior and MODEL2VEC):

- ``loo``: trained on the other 11 tasks;
- ``lodo`` (leave-one-domain-out): trained only on tasks of *other* pools (Fashion,
  MNIST, digits, glyphs), so what generalises to a new domain is measured.

Methods: chance, always-ImageNet, oracle, static prior (lowest mean error on the
training tasks), d_sym, d_asym (alpha 0.15), MODEL2VEC (the shipped ``bias="both"``,
and the per-filter-only, per-expert-offset-only and temperature-only variants), LogME on
all 12 experts, and the two-stage recommender (shortlist K by d_sym or d_asym, then
LogME) at K = 1, 2, 3, 5, 12. Reported: relative error increase (ratio of means),
top-1, weighted tau, forward passes per query (experts run over the task's images),
and 95% paired-bootstrap intervals (2,000 resamples of the tasks) for the differences
that matter. 12 tasks is a small sample: read the intervals.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.selection.distances import cdist, cdist_asym
from t2v_hub.selection.metrics import chance_baseline, evaluate_selection
from t2v_hub.selection.model2vec import SelectorConfig
from t2v_hub.selection.training import train_model2vec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KS = (1, 2, 3, 5, 12)
ALPHA = 0.15


def load() -> dict[str, Any]:
    from t2v_hub.trivial import trivial_for

    d = json.loads((RESULTS / "reproduce_small.json").read_text())
    em = d["error_matrix"]
    experts = [e for e in em["experts"] if e != "generic_imagenet"]
    tasks = [t for t in experts if t in em["tasks"]]  # the expert tasks (pool_loo)
    col = {e: em["experts"].index(e) for e in em["experts"]}
    row = {t: em["tasks"].index(t) for t in em["tasks"]}
    E = torch.tensor([[em["errors"][row[t]][col[e]] for e in experts] for t in tasks], dtype=torch.float32)
    generic = torch.tensor([em["errors"][row[t]][col["generic_imagenet"]] for t in tasks])
    logme = torch.tensor([[d["logme"][t][col[e]] for e in experts] for t in tasks], dtype=torch.float32)
    embs = [Task2VecEmbedding.load(next((ROOT / "examples/zoo/t2v-zoo" / t / "task2vec").glob("*.safetensors")))
            for t in tasks]
    X = torch.stack([e.vector for e in embs])
    pools = [d["tasks"][t]["pool"] for t in tasks]
    return {"tasks": tasks, "experts": experts, "errors": E, "generic": generic, "logme": logme, "X": X,
            "F": X.clone(), "t0": trivial_for(embs[0]).vector, "pools": pools, "cost": d["cost_per_query"]}


def _mask(scores: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    s = scores.clone().float()
    s[exclude] = float("nan")
    return s


def _chosen_errors(errors: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    s = torch.nan_to_num(scores, nan=float("inf"))
    return errors.gather(1, s.argmin(1, keepdim=True))[:, 0]


def two_stage(stage1: torch.Tensor, logme: torch.Tensor, k: int) -> torch.Tensor:
    """Scores (lower = better) of 'shortlist k by stage1, then order the shortlist by LogME'."""
    out = torch.full_like(stage1, float("nan"))
    for i in range(stage1.shape[0]):
        s = torch.nan_to_num(stage1[i], nan=float("inf"))
        order = torch.argsort(s)
        valid = order[torch.isfinite(s[order])][:k]
        # Shortlisted experts first (by -LogME; |LogME| < 10 here, and float32 keeps 1e-5 at 100),
        # the rest after in stage-1 order.
        out[i, valid] = -logme[i, valid] - 100.0
        rest = [j for j in order.tolist() if j not in set(valid.tolist()) and math.isfinite(float(s[j]))]
        for r, j in enumerate(rest):
            out[i, j] = float(r)
    return out


def learned(data: dict[str, Any], exclude: torch.Tensor, lodo: bool) -> dict[str, torch.Tensor]:
    """Static prior and MODEL2VEC scores, trained per test task on the allowed tasks only."""
    E, X, F, t0, pools = data["errors"], data["X"], data["F"], data["t0"], data["pools"]
    masked = E.clone()
    masked[exclude] = float("nan")
    T = E.shape[0]
    out = {"static_prior": torch.full(E.shape, float("nan"))}
    variants = {"model2vec": "both", "model2vec[bias=filter]": "filter", "model2vec[bias=scalar]": "scalar",
                "model2vec[bias=none]": "none"}
    for name in variants:
        out[name] = torch.full(E.shape, float("nan"))
    for i in range(T):
        train = torch.tensor([j != i and (not lodo or pools[j] != pools[i]) for j in range(T)])
        tr = masked[train]
        out["static_prior"][i] = torch.nanmean(tr, 0).nan_to_num(nan=float("inf"))
        for name, bias in variants.items():
            sel = train_model2vec(X[train], F, tr, t0, SelectorConfig(alpha=ALPHA, bias=bias))
            out[name][i] = sel.scores(X[i], sel.expert_ids, F)[0]
    return out


def _rel_increase(chosen: torch.Tensor, best: torch.Tensor) -> float:
    return float((chosen.mean() - best.mean()) / best.mean())


def bootstrap(chosen_a: torch.Tensor, chosen_b: torch.Tensor, best: torch.Tensor, n: int = 2000) -> dict[str, float]:
    """95% paired-bootstrap interval of rel. error increase (a) minus (b), resampling tasks."""
    g = torch.Generator().manual_seed(0)
    T = best.numel()
    diffs = []
    for _ in range(n):
        idx = torch.randint(0, T, (T,), generator=g)
        diffs.append(_rel_increase(chosen_a[idx], best[idx]) - _rel_increase(chosen_b[idx], best[idx]))
    d = torch.tensor(diffs)
    return {"difference": _rel_increase(chosen_a, best) - _rel_increase(chosen_b, best),
            "ci95": [float(d.quantile(0.025)), float(d.quantile(0.975))]}


def run() -> dict[str, Any]:
    data = load()
    E, X, F, t0, logme = data["errors"], data["X"], data["F"], data["t0"], data["logme"]
    exclude = torch.tensor([[e == t for e in data["experts"]] for t in data["tasks"]])
    n_exp = int((~exclude[0]).sum())
    best = torch.where(exclude, torch.full_like(E, float("inf")), E).min(1).values
    d_sym = cdist(F, X).T
    d_asym = cdist_asym(F, X, t0, alpha=ALPHA).T
    out: dict[str, Any] = {"tasks": data["tasks"], "pools": data["pools"], "num_candidates": n_exp,
                           "alpha": ALPHA, "meta_tasks": {}}
    images = data["cost"]["logme"]["forward_passes_mean"] / data["cost"]["logme"]["networks_run"]
    sec_fwd = data["cost"]["logme"]["seconds_forward_mean"] / data["cost"]["logme"]["networks_run"]
    sec_probe = data["cost"]["task2vec[montecarlo]"]["seconds_mean"]
    for meta in ("loo", "lodo"):
        scores: dict[str, tuple[torch.Tensor, int, float]] = {}  # name -> (scores, forward passes, seconds)
        lrn = learned(data, exclude, lodo=meta == "lodo")
        scores["static_prior"] = (lrn["static_prior"], 0, 0.0)
        scores["d_sym"] = (d_sym, 0, sec_probe)
        scores["d_asym"] = (d_asym, 0, sec_probe)
        for name in ("model2vec", "model2vec[bias=filter]", "model2vec[bias=scalar]", "model2vec[bias=none]"):
            scores[name] = (lrn[name], 0, sec_probe)
        scores["logme_all"] = (-logme, n_exp, n_exp * sec_fwd)
        for name, base in (("d_sym", d_sym), ("d_asym", d_asym)):
            for k in KS:
                scores[f"two_stage[{name}, K={k}]"] = (two_stage(_mask(base, exclude), logme, k), min(k, n_exp),
                                                       sec_probe + min(k, n_exp) * sec_fwd)
        scores["oracle"] = (E, 0, 0.0)
        table: dict[str, Any] = {"chance": chance_baseline(E, exclude)}
        gen = data["generic"]
        table["generic_imagenet"] = {"relative_error_increase": _rel_increase(gen, best),
                                     "top1": float((gen <= best).float().mean())}
        chosen: dict[str, torch.Tensor] = {}
        for name, (s, passes, sec) in scores.items():
            m = _mask(s, exclude)
            r = evaluate_selection(E, m, exclude)
            chosen[name] = _chosen_errors(E, m)
            table[name] = {**{k: r[k] for k in ("relative_error_increase", "top1", "weighted_tau")},
                           "forward_passes_per_query": passes, "images_per_query": round(passes * images),
                           "seconds_per_query": round(sec, 2)}
        ci = {
            "two_stage[d_sym, K=3] - logme_all": bootstrap(chosen["two_stage[d_sym, K=3]"], chosen["logme_all"], best),
            "model2vec - static_prior": bootstrap(chosen["model2vec"], chosen["static_prior"], best),
            "d_asym - d_sym": bootstrap(chosen["d_asym"], chosen["d_sym"], best),
        }
        same = sum(int(a == b) for a, b in zip(chosen["d_asym"].tolist(), chosen["d_sym"].tolist(), strict=True))
        out["meta_tasks"][meta] = {"methods": table, "paired_bootstrap": ci,
                                   "d_asym_same_choice_as_d_sym": f"{same}/{len(best)}"}
    return out


def write(res: dict[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "selection_quality.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Selection quality on the zoo's 12 expert tasks (self excluded)", "",
             f"Candidates: {res['num_candidates']} fine-tuned experts per task. alpha = {res['alpha']}.", ""]
    for meta, r in res["meta_tasks"].items():
        lines += [f"## {meta}", "", "| method | rel. error incr. | top-1 | w. tau | experts run / query | s / query |",
                  "|---|---|---|---|---|---|"]
        for name, m in r["methods"].items():
            tau = m.get("weighted_tau")
            tau_s = f"{tau:.3f}" if isinstance(tau, float) and math.isfinite(tau) else "-"
            lines.append(f"| {name} | {100 * m['relative_error_increase']:+.1f}% | {m['top1']:.2f} | {tau_s} | "
                         f"{m.get('forward_passes_per_query', '-')} | {m.get('seconds_per_query', '-')} |")
        lines += ["", "| difference (rel. error incr.) | value | 95% paired bootstrap |", "|---|---|---|"]
        for k, v in r["paired_bootstrap"].items():
            lines.append(f"| {k} | {100 * v['difference']:+.1f} pts | [{100 * v['ci95'][0]:+.1f}, "
                         f"{100 * v['ci95'][1]:+.1f}] |")
        lines += ["", f"d_asym makes the same choice as d_sym on {r['d_asym_same_choice_as_d_sym']} tasks.", ""]
    (RESULTS / "selection_quality.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (meta, r) in zip(axes, res["meta_tasks"].items(), strict=True):
        m = r["methods"]
        for base, style in (("d_sym", "o-"), ("d_asym", "s--")):
            ks = [k for k in KS if f"two_stage[{base}, K={k}]" in m]
            ax.plot([m[f"two_stage[{base}, K={k}]"]["forward_passes_per_query"] for k in ks],
                    [100 * m[f"two_stage[{base}, K={k}]"]["relative_error_increase"] for k in ks], style,
                    label=f"{base} shortlist, then LogME")
        for name, marker, label in (("d_sym", "^", "d_sym"), ("model2vec", "v", "MODEL2VEC bias=both"),
                                    ("model2vec[bias=filter]", "P", "MODEL2VEC bias=filter (default)"),
                                    ("static_prior", "D", "static prior"), ("logme_all", "*", "LogME, all experts")):
            ax.plot([m[name]["forward_passes_per_query"]], [100 * m[name]["relative_error_increase"]], marker,
                    markersize=9, label=label, alpha=0.8)
        ax.set_title(meta)
        ax.set_xlabel("expert forward passes per query")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("relative error increase over the best expert (%)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "selection_quality_frontier.png", dpi=120)


if __name__ == "__main__":
    if "--plot-only" in sys.argv:  # redraw from the committed results
        write(json.loads((RESULTS / "selection_quality.json").read_text()))
        raise SystemExit(0)
    res = run()
    write(res)
    print((RESULTS / "selection_quality.md").read_text())
