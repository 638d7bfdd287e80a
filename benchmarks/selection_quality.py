"""Selection quality on the zoo: pool leave-one-out, mixed and leave-one-domain-out, one- and two-stage.

    python -m benchmarks.selection_quality      # ~5 min on 2 CPUs; writes benchmarks/results/selection_quality.*
    python -m benchmarks.selection_quality --pack benchmarks/results/zoo_embeddings_small_gt2.safetensors \
        --only both filter layer --stem selection_quality_gt2     # the ground-truth replicate
    python -m benchmarks.selection_quality --replicates           # how far the replicates disagree, pairwise

Inputs (nothing is recomputed from images): a pack of the 36 tasks' montecarlo TASK2VEC
embeddings with one reproduction run's ground truth (the error of a linear probe on every
expert's features for every task, LogME, and where that run recorded them H-score and kNN):
``zoo_embeddings_small.safetensors`` (packed from the reproduction's cache by
:func:`pack_embeddings`) or ``zoo_embeddings_small_gt2.safetensors`` (the same embeddings with a
second ground-truth run, :func:`repack_groundtruth`). Candidates are the 12 fine-tuned experts;
the expert trained on a task itself is never a candidate for it.

Meta-tasks (:data:`META_TASKS`):

- ``loo``: the 12 expert tasks (the reproduction's pool_loo); learned methods trained
  on the 35 other tasks;
- ``mixed``: the 24 tasks no expert was trained on, against all 12 experts;
- ``lodo`` (leave-one-domain-out): all 36 tasks, the learned methods (static prior,
  MODEL2VEC) trained only on tasks of *other* pools (Fashion, MNIST, digits, glyphs), so
  what generalises to a new domain is measured.

Methods: chance, always-ImageNet, oracle, static prior (lowest mean error on the training
tasks), d_sym, d_asym (alpha 0.15), MODEL2VEC (``bias="both"``, and the per-filter-only,
per-expert-offset-only, temperature-only and per-layer (the default) variants), LogME, H-score
and kNN on all experts, the two-stage recommender (shortlist K by d_sym or d_asym, then LogME)
at K = 1, 2, 3, 4, 5, 8, 12 and with H-score/kNN at K = 3, and the shortlist oracle (d_sym's top K
ordered by the true errors: the ceiling of any stage 2). Reported: relative error increase
(ratio of means), top-1, weighted tau, forward passes per query (experts run over the task's
images), and 95% paired-bootstrap intervals (2,000 resamples of the tasks) for the differences
that matter. 12-36 tasks is a small sample: read the intervals.
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
from t2v_hub.selection.generalist import generalist_scores, shortlist_with_generalists
from t2v_hub.selection.layer_weights import probe_layer_ids
from t2v_hub.selection.metrics import chance_baseline, evaluate_selection
from t2v_hub.selection.model2vec import SelectorConfig
from t2v_hub.selection.training import train_model2vec

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
KS = (1, 2, 3, 4, 5, 8, 12)
ALPHA = 0.15


PACK = RESULTS / "zoo_embeddings_small.safetensors"


def pack_embeddings(path: Path = PACK, cache: Path | None = None) -> Path:
    """The reproduction's montecarlo embeddings of every zoo task (and t0) as one committed file.

    Read from ``benchmarks/zoo/out/small/embeddings/montecarlo`` (written by
    ``python -m benchmarks.reproduce --config small``), so this benchmark needs no rerun.
    """
    from safetensors.torch import save_file

    from benchmarks.reproduce import DEFAULT_OUT
    from t2v_hub.trivial import trivial_for

    folder = cache or DEFAULT_OUT / "small" / "embeddings" / "montecarlo"
    names = json.loads((RESULTS / "reproduce_small.json").read_text())["error_matrix"]["tasks"]
    missing = [n for n in names if not (folder / f"{n}.safetensors").is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} task embeddings missing under {folder} (e.g. {missing[0]}); run "
                         "`python -m benchmarks.reproduce --config small --no-demo` first")
    embs = [Task2VecEmbedding.load(folder / f"{n}.safetensors") for n in names]
    t0 = trivial_for(embs[0]).vector
    # The ground truth of the same run travels with its embeddings: the glyph pool is rendered from
    # the fonts installed, so two machines' runs differ there and must not be mixed.
    gt = torch.load(folder.parent.parent / "groundtruth.pt", weights_only=False)["value"]
    meta = {"names": json.dumps(names), "probe": embs[0].probe, "method": embs[0].method,
            "input_size": json.dumps(embs[0].config("input_size")), "source": str(folder.relative_to(ROOT)),
            "num_fonts": str(_num_fonts()),
            "experts": json.dumps(json.loads((RESULTS / "reproduce_small.json").read_text())["error_matrix"]["experts"])}
    tensors = {"vectors": torch.stack([e.vector for e in embs]).contiguous(), "t0": t0.contiguous(),
               **_scores_of(gt, names)}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


SCORE_KEYS = ("errors", "logme", "hscore", "knn")  # the ground truth's (task x expert) tables a pack carries


def _scores_of(gt: dict[str, Any], names: list[str]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([gt[k][n] for n in names], dtype=torch.float32) for k in SCORE_KEYS if k in gt}


def repack_groundtruth(dst: Path, src: Path = PACK, groundtruth: Path | None = None) -> Path:
    """``src``'s task embeddings with another ground-truth run's tables (errors, LogME, H-score, kNN).

    The task embeddings come from the ImageNet probe alone, so they do not depend on the experts;
    the experts' fine-tuning does depend on the machine (float rounding, amplified by SGD), so a
    second ground-truth run (``python -m benchmarks.reproduce --config small --stop-after
    groundtruth``, ~20 CPU-min) is a replicate of the zoo's ground truth. The generic
    (ImageNet) column must be identical, which checks that the tasks and images are the same.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    from benchmarks.reproduce import DEFAULT_OUT

    gt = torch.load(groundtruth or DEFAULT_OUT / "small" / "groundtruth.pt", weights_only=False)["value"]
    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iterator)
    names, cols = json.loads(meta["names"]), json.loads(meta["experts"])
    new = _scores_of(gt, names)
    g = cols.index("generic_imagenet")
    diff = float((new["errors"][:, g] - tensors["errors"][:, g]).abs().max())
    if diff > 1e-6:
        raise SystemExit(f"the ground-truth run has other tasks: its ImageNet errors differ from {src.name}'s by "
                         f"up to {diff:.4f} (fonts: {_num_fonts()} installed, {meta.get('num_fonts')} in the pack)")
    tensors.update(new)
    meta = {**meta, "groundtruth_of": f"replicate of {src.name}'s ground truth (same tasks and embeddings)"}
    tmp = dst.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(dst)
    return dst


def _num_fonts() -> int:
    from benchmarks.zoo.data import list_glyph_fonts

    return len(list_glyph_fonts())


def load(pack: Path = PACK) -> dict[str, Any]:
    """Ground truth of every zoo task (36) against the 12 fine-tuned experts, and the tasks' embeddings."""
    from safetensors import safe_open

    d = json.loads((RESULTS / "reproduce_small.json").read_text())
    if not pack.is_file():
        pack_embeddings(pack)
    with safe_open(str(pack), "pt") as f:
        meta = f.metadata()
        tasks, cols = json.loads(meta["names"]), json.loads(meta["experts"])
        V, t0 = f.get_tensor("vectors"), f.get_tensor("t0")
        tables = {k: f.get_tensor(k) for k in SCORE_KEYS if k in f.keys()}  # noqa: SIM118
    experts = [e for e in cols if e != "generic_imagenet"]
    keep = [cols.index(e) for e in experts]
    errors = tables["errors"]
    E, logme, generic = errors[:, keep], tables["logme"][:, keep], errors[:, cols.index("generic_imagenet")]
    transfer = {k: tables[k][:, keep] for k in ("logme", "hscore", "knn") if k in tables}
    X = V
    F = V[[tasks.index(e) for e in experts]]  # an expert's embedding is that of the task it was trained on
    pools = [d["tasks"][t]["pool"] for t in tasks]
    size = json.loads(meta["input_size"])
    layers = probe_layer_ids(meta["probe"], size[-1] if size else None)  # bias="layer": each filter's layer
    return {"tasks": tasks, "experts": experts, "errors": E, "generic": generic, "logme": logme, "X": X,
            "F": F, "t0": t0, "pools": pools, "cost": d["cost_per_query"], "transfer": transfer, "layers": layers,
            "is_expert_task": [t in experts for t in tasks], "pack": pack.name}


def _mask(scores: torch.Tensor, exclude: torch.Tensor) -> torch.Tensor:
    s = scores.clone().float()
    s[exclude] = float("nan")
    return s


def _chosen_errors(errors: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    s = torch.nan_to_num(scores, nan=float("inf"))
    return errors.gather(1, s.argmin(1, keepdim=True))[:, 0]


def two_stage(stage1: torch.Tensor, stage2: torch.Tensor, k: int) -> torch.Tensor:
    """Scores (lower = better) of 'shortlist k by stage1, then order the shortlist by stage2 (higher = better)'.

    Ranks, so any transferability score's scale works: the shortlist takes 0..k-1 in stage-2
    order, the other experts follow in stage-1 order.
    """
    out = torch.full_like(stage1, float("nan"))
    for i in range(stage1.shape[0]):
        s = torch.nan_to_num(stage1[i], nan=float("inf"))
        order = [j for j in torch.argsort(s, stable=True).tolist() if math.isfinite(float(s[j]))]
        short = order[:k]
        by2 = sorted(short, key=lambda j: -float(stage2[i, j]))  # stable: ties keep stage-1 order
        for r, j in enumerate(by2 + order[k:]):
            out[i, j] = float(r)
    return out


def two_stage_generalist(stage1: torch.Tensor, generalist: torch.Tensor, stage2: torch.Tensor, k: int,
                         g: int = 1) -> torch.Tensor:
    """Like :func:`two_stage`, with the shortlist of ``recommend --generalists g``: stage 1's top ``k``
    plus the ``g`` best generalists (lowest ``generalist``, per test task) not among them."""
    out = torch.full_like(stage1, float("nan"))
    for i in range(stage1.shape[0]):
        s = torch.nan_to_num(stage1[i], nan=float("inf"))
        order = [j for j in torch.argsort(s, stable=True).tolist() if math.isfinite(float(s[j]))]
        prior = torch.nan_to_num(generalist[i], nan=float("inf"))
        by_prior = [j for j in torch.argsort(prior, stable=True).tolist() if math.isfinite(float(prior[j]))]
        short = shortlist_with_generalists(order, by_prior, k, g)
        by2 = sorted(short, key=lambda j: -float(stage2[i, j]))
        for r, j in enumerate(by2 + [j for j in order if j not in short]):
            out[i, j] = float(r)
    return out


def shortlist_oracle(stage1: torch.Tensor, errors: torch.Tensor, k: int) -> torch.Tensor:
    """The best any stage 2 could do on a stage-1 shortlist of k: the shortlist ordered by true error."""
    return two_stage(stage1, -errors, k)


def learned(data: dict[str, Any], exclude: torch.Tensor, lodo: bool, model2vec: bool = True,
            only: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
    """Static prior and MODEL2VEC scores for every task, each trained without it (lodo: without its pool)."""
    E, X, F, t0, pools = data["errors"], data["X"], data["F"], data["t0"], data["pools"]
    masked = E.clone()
    masked[exclude] = float("nan")
    T = E.shape[0]
    # generalist: each expert's mean relative error increase on the training tasks (recommend --generalists).
    out = {"static_prior": torch.full(E.shape, float("nan")), "generalist": torch.full(E.shape, float("nan"))}
    # (bias, prior): the rows measured before the prior offset existed keep prior="none".
    variants = {"model2vec": ("both", "none"), "model2vec[bias=filter]": ("filter", "none"),
                "model2vec[bias=scalar]": ("scalar", "none"), "model2vec[bias=none]": ("none", "none"),
                "model2vec[bias=layer]": ("layer", "none"),
                "model2vec[bias=layer, prior=cv]": ("layer", "cv")} if model2vec else {}
    if only is not None:
        variants = {k: v for k, v in variants.items() if v[0] in only and (v[1] == "none" or "prior" in only)}
    for name in variants:
        out[name] = torch.full(E.shape, float("nan"))
    for i in range(T):
        train = torch.tensor([j != i and (not lodo or pools[j] != pools[i]) for j in range(T)])
        tr = masked[train]
        out["static_prior"][i] = torch.nanmean(tr, 0).nan_to_num(nan=float("inf"))
        out["generalist"][i] = generalist_scores(tr)
        for name, (bias, prior) in variants.items():
            sel = train_model2vec(X[train], F, tr, t0, SelectorConfig(alpha=ALPHA, bias=bias, prior=prior),
                                  layers=data["layers"])
            out[name][i] = sel.scores(X[i], sel.expert_ids, F)[0]
    return out


COMPLEXITY_GRID = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)


def complexity_cv(data: dict[str, Any], d_sym: torch.Tensor, exclude: torch.Tensor, lodo: bool) -> torch.Tensor:
    """``d_sym - a * log ||F_j||`` with ``a`` chosen per test task on its training tasks only.

    The term prefers experts whose own task embedding is larger (supplement 1.2: more data,
    more complex tasks, larger norm), which is what the paper's asymmetric term is for; its one
    weight is a function of the expert's embedding, not of its identity, so it can carry over to
    a domain no training task came from. ``a`` minimises the training tasks' mean chosen error.
    """
    E, pools = data["errors"], data["pools"]
    lognorm = data["F"].norm(dim=1).log()
    T = E.shape[0]
    out = torch.full(E.shape, float("nan"))
    for i in range(T):
        train = [j for j in range(T) if j != i and (not lodo or pools[j] != pools[i])]
        best_a, best_err = 0.0, float("inf")
        for a in COMPLEXITY_GRID:
            s = _mask(d_sym[train] - a * lognorm[None, :], exclude[train])
            err = float(_chosen_errors(E[train], s).mean())
            if err < best_err - 1e-9:
                best_a, best_err = a, err
        out[i] = d_sym[i] - best_a * lognorm
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


META_TASKS = {
    "loo": "the 12 expert tasks, self excluded; learned methods trained on the 35 other tasks",
    "mixed": "the 24 tasks no expert was trained on, all 12 experts; learned methods trained on the 35 other tasks",
    "lodo": "all 36 tasks, self excluded; learned methods trained only on tasks of other pools",
}


def run(pack: Path = PACK, model2vec: bool = True, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Every method on every meta-task; ``model2vec=False`` skips its 360 trainings (the slow part),
    ``only=("filter", "layer")`` trains just those MODEL2VEC variants."""
    data = load(pack)
    E, X, F, t0, logme = data["errors"], data["X"], data["F"], data["t0"], data["logme"]
    exclude = torch.tensor([[e == t for e in data["experts"]] for t in data["tasks"]])
    best_all = torch.where(exclude, torch.full_like(E, float("inf")), E).min(1).values
    d_sym = cdist(F, X).T
    d_asym = cdist_asym(F, X, t0, alpha=ALPHA).T
    out: dict[str, Any] = {"tasks": data["tasks"], "pools": data["pools"], "num_experts": len(data["experts"]),
                           "alpha": ALPHA, "embeddings": data["pack"], "meta_task_definitions": META_TASKS,
                           "meta_tasks": {}}
    images = data["cost"]["logme"]["forward_passes_mean"] / data["cost"]["logme"]["networks_run"]
    sec_fwd = data["cost"]["logme"]["seconds_forward_mean"] / data["cost"]["logme"]["networks_run"]
    sec_probe = data["cost"]["task2vec[montecarlo]"]["seconds_mean"]
    trained = {"loo": learned(data, exclude, lodo=False, model2vec=model2vec, only=only)}
    trained["mixed"] = trained["loo"]
    trained["lodo"] = learned(data, exclude, lodo=True, model2vec=model2vec, only=only)
    for meta, lodo in (("loo", False), ("lodo", True)):
        trained[meta]["complexity_cv"] = complexity_cv(data, d_sym, exclude, lodo)
    expert_task = torch.tensor(data["is_expert_task"])
    rows = {"loo": expert_task, "mixed": ~expert_task, "lodo": torch.ones_like(expert_task)}
    for meta, keep in rows.items():
        Em, ex, best = E[keep], exclude[keep], best_all[keep]
        n_exp = int((~ex).sum(1).float().mean().round())
        lrn = {k: v[keep] for k, v in trained[meta].items()}
        scores: dict[str, tuple[torch.Tensor, int, float]] = {}  # name -> (scores, forward passes, seconds)
        scores["static_prior"] = (lrn["static_prior"], 0, 0.0)
        scores["d_sym"] = (d_sym[keep], 0, sec_probe)
        scores["d_asym"] = (d_asym[keep], 0, sec_probe)
        for name in ("model2vec", "model2vec[bias=filter]", "model2vec[bias=scalar]", "model2vec[bias=none]",
                     "model2vec[bias=layer]", "complexity_cv"):
            if name in lrn:
                scores[name] = (lrn[name], 0, sec_probe)
        scores["logme_all"] = (-logme[keep], n_exp, n_exp * sec_fwd)
        for metric, tab in data["transfer"].items():
            if metric != "logme":  # each other score alone on every expert, and as stage 2 at the default K
                scores[f"{metric}_all"] = (-tab[keep], n_exp, n_exp * sec_fwd)
        for name, base in (("d_sym", d_sym[keep]), ("d_asym", d_asym[keep])):
            for k in KS:
                scores[f"two_stage[{name}, K={k}]"] = (two_stage(_mask(base, ex), logme[keep], k), min(k, n_exp),
                                                       sec_probe + min(k, n_exp) * sec_fwd)
        for k in (2, 3):  # recommend's default shortlist (K = 3, one generalist), and one at K = 3's cost
            scores[f"two_stage[d_sym, K={k}, +1 generalist]"] = (
                two_stage_generalist(_mask(d_sym[keep], ex), _mask(lrn["generalist"], ex), logme[keep], k),
                min(k + 1, n_exp), sec_probe + min(k + 1, n_exp) * sec_fwd)
        for metric, tab in data["transfer"].items():
            if metric != "logme":
                scores[f"two_stage[d_sym, K=3, {metric}]"] = (two_stage(_mask(d_sym[keep], ex), tab[keep], 3), 3,
                                                              sec_probe + 3 * sec_fwd)
        for k in KS[:-1]:  # what a perfect stage 2 would reach on the d_sym shortlist: the ceiling of K
            scores[f"shortlist_oracle[d_sym, K={k}]"] = (shortlist_oracle(_mask(d_sym[keep], ex), Em, k), min(k, n_exp),
                                                         sec_probe + min(k, n_exp) * sec_fwd)
        scores["oracle"] = (Em, 0, 0.0)
        table: dict[str, Any] = {"chance": chance_baseline(Em, ex)}
        gen = data["generic"][keep]
        table["generic_imagenet"] = {"relative_error_increase": _rel_increase(gen, best),
                                     "top1": float((gen <= best).float().mean())}
        chosen: dict[str, torch.Tensor] = {}
        for name, (sc, passes, sec) in scores.items():
            m = _mask(sc, ex)
            r = evaluate_selection(Em, m, ex)
            chosen[name] = _chosen_errors(Em, m)
            table[name] = {**{k: r[k] for k in ("relative_error_increase", "top1", "weighted_tau")},
                           "forward_passes_per_query": passes, "images_per_query": round(passes * images),
                           "seconds_per_query": round(sec, 2)}
        pairs = [("two_stage[d_sym, K=3]", "logme_all"), ("two_stage[d_sym, K=3, +1 generalist]", "logme_all"),
                 ("two_stage[d_sym, K=3, +1 generalist]", "two_stage[d_sym, K=4]"), ("model2vec", "static_prior"),
                 ("model2vec[bias=filter]", "d_asym"), ("model2vec[bias=layer]", "d_asym"),
                 ("model2vec[bias=layer]", "static_prior"), ("d_asym", "d_sym"), ("complexity_cv", "d_sym")]
        ci = {f"{a} - {b}": bootstrap(chosen[a], chosen[b], best) for a, b in pairs if a in chosen and b in chosen}
        same = sum(int(a == b) for a, b in zip(chosen["d_asym"].tolist(), chosen["d_sym"].tolist(), strict=True))
        out["meta_tasks"][meta] = {"num_tasks": int(keep.sum()), "candidates_per_task": n_exp, "methods": table,
                                   "paired_bootstrap": ci, "d_asym_same_choice_as_d_sym": f"{same}/{len(best)}"}
    return out


def write(res: dict[str, Any], stem: str = "selection_quality") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Selection quality on the zoo's 36 tasks and 12 fine-tuned experts", "",
             f"alpha = {res['alpha']}; embeddings: {res['embeddings']}.", ""]
    for meta, r in res["meta_tasks"].items():
        lines += [f"## {meta}: {res['meta_task_definitions'][meta]}", "", "| method | rel. error incr. | top-1 | w. tau | experts run / query | s / query |",
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
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(res["meta_tasks"]), figsize=(15, 4.2), sharey=True)
    for ax, (meta, r) in zip(axes, res["meta_tasks"].items(), strict=True):
        m = r["methods"]
        for base, style in (("d_sym", "o-"), ("d_asym", "s--")):
            ks = [k for k in KS if f"two_stage[{base}, K={k}]" in m]
            ax.plot([m[f"two_stage[{base}, K={k}]"]["forward_passes_per_query"] for k in ks],
                    [100 * m[f"two_stage[{base}, K={k}]"]["relative_error_increase"] for k in ks], style,
                    label=f"{base} shortlist, then LogME")
        for name, marker, label in (("d_sym", "^", "d_sym"), ("model2vec", "v", "MODEL2VEC bias=both"),
                                    ("model2vec[bias=filter]", "P", "MODEL2VEC bias=filter"),
                                    ("model2vec[bias=layer]", "X", "MODEL2VEC bias=layer (default)"),
                                    ("static_prior", "D", "static prior"), ("logme_all", "*", "LogME, all experts"),
                                    ("hscore_all", "h", "H-score, all experts"), ("knn_all", "p", "kNN, all experts")):
            if name not in m:
                continue
            ax.plot([m[name]["forward_passes_per_query"]], [100 * m[name]["relative_error_increase"]], marker,
                    markersize=9, label=label, alpha=0.8)
        ax.set_title(meta)
        ax.set_xlabel("expert forward passes per query")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("relative error increase over the best expert (%)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{stem}_frontier.png", dpi=120)


# The same tasks and embeddings with ground truths from three runs of the experts' fine-tuning
# (A: the pack; B and C: `reproduce --stop-after groundtruth` on two later machines, repacked).
REPLICATES = (PACK, RESULTS / "zoo_embeddings_small_gt2.safetensors", RESULTS / "zoo_embeddings_small_gt3.safetensors")


def replicate_noise(a: Path = PACK, b: Path = REPLICATES[1]) -> dict[str, Any]:
    """How far two ground-truth replicates of the same zoo disagree: the best expert by one run's true
    errors, scored on the other's. No method that sees only the task embeddings (not the fine-tuned
    networks) can be expected to do better than this on average."""
    A, B = load(a), load(b)
    exclude = torch.tensor([[e == t for e in A["experts"]] for t in A["tasks"]])
    expert_task = torch.tensor(A["is_expert_task"])
    rows = {"loo": expert_task, "mixed": ~expert_task, "lodo": torch.ones_like(expert_task)}
    EA, EB = A["errors"], B["errors"]
    out: dict[str, Any] = {"packs": [a.name, b.name],
                           "mean_abs_error_difference": float((EA - EB)[~exclude].abs().mean()),
                           "correlation": float(torch.corrcoef(torch.stack([EA[~exclude], EB[~exclude]]))[0, 1]),
                           "same_best_expert": int((_mask(EA, exclude).nan_to_num(nan=float("inf")).argmin(1)
                                                    == _mask(EB, exclude).nan_to_num(nan=float("inf")).argmin(1)).sum()),
                           "num_tasks": len(A["tasks"]), "other_run_oracle": {}}
    for name, (pick, truth) in {"a_scored_on_b": (EA, EB), "b_scored_on_a": (EB, EA)}.items():
        chosen = _chosen_errors(truth, _mask(pick, exclude))
        best = _mask(truth, exclude).nan_to_num(nan=float("inf")).min(1).values
        out["other_run_oracle"][name] = {m: _rel_increase(chosen[k], best[k]) for m, k in rows.items()}
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, default=PACK, help="embeddings and ground truth (default %(default)s)")
    ap.add_argument("--only", nargs="+", default=None, help="MODEL2VEC variants to train (default: all)")
    ap.add_argument("--stem", default="selection_quality", help="results file names (default %(default)s)")
    ap.add_argument("--plot-only", action="store_true", help="redraw from the committed results")
    ap.add_argument("--replicates", action="store_true",
                    help="only compare the ground-truth replicates, pairwise -> selection_quality_replicates.json")
    args = ap.parse_args(argv)
    if args.replicates:
        from itertools import combinations

        packs = [p for p in REPLICATES if p.is_file()]
        res = {"pairs": [replicate_noise(a, b) for a, b in combinations(packs, 2)]}
        (RESULTS / "selection_quality_replicates.json").write_text(json.dumps(res, indent=1) + "\n")
        print(json.dumps(res, indent=1))
        return 0
    if args.plot_only:
        write(json.loads((RESULTS / f"{args.stem}.json").read_text()), args.stem)
        return 0
    write(run(args.pack, only=tuple(args.only) if args.only else None), args.stem)
    print((RESULTS / f"{args.stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
