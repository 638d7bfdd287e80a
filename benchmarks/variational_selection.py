"""Selection with the variational (robust) Fisher, and the trivial embedding of its learned prior.

    python -m benchmarks.variational_selection     # ~25 min on 2 CPUs; writes benchmarks/results/variational_selection.json

The 36 tasks of the reproduction's ``small`` zoo (same pools, same images: built by
:func:`benchmarks.reproduce.prepare`, cached under ``benchmarks/zoo/out/small``) are embedded
with ``--method variational`` under two optimisers:

* ``fixed_point``: the closed-form step per filter (:mod:`t2v_hub.fisher._variational_fixed_point`),
  2 passes over each task's <= 300 images, without (``line_search=False``) and with its
  J-monotone safeguard (the default);
* ``adam``: the reproduction's setting (60 Adam steps at lr 1e-2, mean of the last half);
* ``gauss_newton``: the closed-form step under Gauss-Newton slopes
  (:mod:`t2v_hub.fisher._variational_gauss_newton`), 2 passes.

``--runs`` recomputes a subset; the other runs' results already in ``--out`` are kept.

and scored against the committed ground truth of ``zoo_embeddings_small.safetensors``
(replicate A: the 12 experts' linear-probe errors). As a check that the tasks are the same, two
tasks are also embedded with ``montecarlo`` and compared with the pack's vectors (cosine).

Two embedding conventions are compared:

* ``H``: what t2v-hub stores, ``Ĥ = (β/2)(Λ - λ²)⁺`` per filter (the Hessian the posterior
  implies beyond the prior); its trivial embedding is 0, so d_asym is d_sym;
* ``P``: the reference code's, the precision itself ``(β/2)Λ = Ĥ + (β/2)λ²`` (``λ²`` is the
  layer's learned prior, recorded as ``method_config["prior_precision_per_layer"]``), with
  the reference's trivial embedding: every filter at its own task's prior, ``(β/2)λ²``.
  ``d_asym(expert -> task) = d_sym(P_e, P_t) - α d_sym(P_e, t0_e)``: the second term measures how
  far the expert's task lifts its precisions above its own prior (the paper's "complexity").

Meta-tasks as in :mod:`benchmarks.selection_quality` (loo: the 12 expert tasks; mixed: the 24
others; lodo: all 36, with α chosen on the other pools' tasks only). Reported per run: relative
error increase, top-1, and for each optimiser how many of the tasks' choices d_asym changes
against d_sym, the late-change share (convergence), the seed-to-seed d_sym of four tasks and
the mean distance between different tasks (a usable embedding puts a task nearer itself).
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from benchmarks.selection_quality import PACK, RESULTS, _chosen_errors, _mask, _rel_increase, bootstrap, load
from t2v_hub.selection.distances import cdist
from t2v_hub.selection.layer_weights import probe_layer_ids
from t2v_hub.selection.metrics import chance_baseline, evaluate_selection

# Up to 3: with the Gauss-Newton embedding the best alpha was the sweep's old end (1.0). Runs kept
# from an earlier --out (fixed_point, adam) were swept to 1.0 only.
ALPHAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0)
RUNS: dict[str, dict[str, Any]] = {
    "fixed_point": {"optimizer": "fixed_point", "line_search": False},  # without its safeguard
    "fixed_point, safeguard": {"optimizer": "fixed_point"},  # the default since the safeguard landed
    "adam": {"steps": 60, "average_last": 0.5},
    "gauss_newton": {"optimizer": "gauss_newton"},  # the closed-form step under Gauss-Newton slopes
}
STABILITY_TASKS = 4  # tasks embedded again with another seed


def embed_zoo(opts: dict[str, Any], tag: str, seed_tasks: int = 0) -> dict[str, Any]:
    """Variational embeddings of every pack task (cached per task), and ``seed_tasks`` of them again at seed 1."""
    from benchmarks.reproduce import DEFAULT_OUT, Cache, _hash, prepare
    from benchmarks.zoo import data as D
    from benchmarks.zoo.configs import get_config
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.task2vec import TensorTask, embed

    cfg = get_config("small")
    run_dir = DEFAULT_OUT / cfg.name
    zoo = prepare(cfg, Cache(run_dir))
    names = load(PACK)["tasks"]
    folder = run_dir / "variational_selection" / tag
    folder.mkdir(parents=True, exist_ok=True)
    key = _hash(zoo["pools_key"], cfg.arch, cfg.input_size, cfg.embed.max_samples, cfg.embed.batch_size, opts)

    def one(name: str, method: str, seed: int, fisher: dict[str, Any] | None) -> tuple[Task2VecEmbedding, float]:
        path = folder / f"{name}.{method}.{seed}.{key}.safetensors"
        timing = path.with_suffix(".seconds")
        if path.is_file() and timing.is_file():
            return Task2VecEmbedding.load(path), float(timing.read_text())
        t = zoo["tasks"][name]
        x = D.normalise(zoo["crops"][t.pool][torch.as_tensor(t.train_idx)], zoo["data_config"])
        tt = TensorTask(x, torch.as_tensor(t.train_y), {"dataset_id": f"zoo/{name}", "zoo_config": cfg.name})
        tic = time.perf_counter()
        e = embed(tt, cfg.arch, method, max_samples=cfg.embed.max_samples, seed=seed, batch_size=cfg.embed.batch_size,
                  input_size=cfg.input_size, fisher_options=fisher)
        sec = time.perf_counter() - tic
        e.save(path)
        timing.write_text(f"{sec:.2f}")
        return e, sec

    embs, secs = [], []
    for name in names:
        e, s = one(name, "variational", cfg.seed, opts)
        embs.append(e)
        secs.append(s)
        print(f"{tag}: {name} late={e.config('method_config').get('late_change_fraction')} {s:.1f}s", flush=True)
    again = [one(n, "variational", cfg.seed + 1, opts)[0] for n in names[:seed_tasks]]
    # Same tasks as the pack? Its montecarlo vectors of a Fashion, an MNIST and a glyph task (the glyph
    # pool is rendered from the installed fonts) are recomputed here.
    picks = [next(i for i, n in enumerate(names) if zoo["tasks"][n].pool == p) for p in ("fashion", "mnist", "glyphs")]
    check = [(i, one(names[i], "montecarlo", cfg.seed, None)[0]) for i in picks] if tag == next(iter(RUNS)) else []
    return {"names": names, "embeddings": embs, "seconds": secs, "again": again, "montecarlo_check": check}


def conventions(embs: list[Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``H`` (as stored), ``P = Ĥ + (β/2)λ²`` (the reference's precisions) and each task's prior ``t0``."""
    first = embs[0]
    size = first.config("input_size")
    layers = probe_layer_ids(first.probe, size[-1] if size else None)
    H = torch.stack([e.vector for e in embs]).float()
    t0 = []
    for e in embs:
        mc = e.config("method_config")
        prior = torch.tensor(mc["prior_precision_per_layer"], dtype=torch.float32)
        if prior.numel() != int(layers.max()) + 1:
            raise SystemExit(f"{prior.numel()} priors for {int(layers.max()) + 1} probe layers")
        t0.append(0.5 * float(mc["beta"]) * prior[layers])
    T0 = torch.stack(t0)
    return H, H + T0, T0


def _scores(Fe: torch.Tensor, X: torch.Tensor, T0e: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """d_asym (tasks x experts) with each expert's own trivial embedding; d_sym when T0e is None or alpha 0."""
    d = cdist(Fe, X).T
    if T0e is None or alpha == 0:
        return d
    own = cdist(Fe, T0e).diagonal()  # each expert against its own trivial embedding
    return d - alpha * own[None, :]


def evaluate(data: dict[str, Any], X: torch.Tensor, T0: torch.Tensor | None) -> dict[str, Any]:
    """Every meta-task for one embedding set: d_sym, the alpha sweep, and lodo's cross-validated alpha."""
    E, tasks, experts, pools = data["errors"], data["tasks"], data["experts"], data["pools"]
    idx = [tasks.index(e) for e in experts]
    Fe = X[idx]
    T0e = T0[idx] if T0 is not None else None
    exclude = torch.tensor([[e == t for e in experts] for t in tasks])
    best = torch.where(exclude, torch.full_like(E, float("inf")), E).min(1).values
    sweep = {a: _mask(_scores(Fe, X, T0e, a), exclude) for a in (ALPHAS if T0 is not None else (0.0,))}
    expert_task = torch.tensor(data["is_expert_task"])
    rows = {"loo": expert_task, "mixed": ~expert_task, "lodo": torch.ones_like(expert_task)}
    out: dict[str, Any] = {}
    for meta, keep in rows.items():
        res: dict[str, Any] = {"chance": chance_baseline(E[keep], exclude[keep])}
        for a, s in sweep.items():
            r = evaluate_selection(E[keep], s[keep], exclude[keep])
            res[f"alpha={a}"] = {"relative_error_increase": r["relative_error_increase"], "top1": r["top1"]}
        if len(sweep) > 1:
            base = _chosen_errors(E[keep], sweep[0.0][keep])
            res["choices_changed_by_alpha"] = {
                str(a): int((_chosen_errors(E[keep], s[keep]) != base).sum()) for a, s in sweep.items() if a}
        out[meta] = res
    if len(sweep) > 1:  # lodo with alpha chosen per test task on the other pools' tasks only
        chosen = torch.empty(len(tasks))
        picks = []
        for i in range(len(tasks)):
            train = [j for j in range(len(tasks)) if pools[j] != pools[i]]
            a_best = min(sweep, key=lambda a: (float(_chosen_errors(E[train], sweep[a][train]).mean()), a))
            picks.append(a_best)
            chosen[i] = _chosen_errors(E[i:i + 1], sweep[a_best][i:i + 1])[0]
        out["lodo"]["alpha_cv"] = {"relative_error_increase": _rel_increase(chosen, best),
                                   "alphas_chosen": sorted(set(picks))}
    return out


def intervals(data: dict[str, Any], mc: torch.Tensor, X: torch.Tensor, T0: torch.Tensor) -> dict[str, Any]:
    """95% paired-bootstrap intervals: the reference convention at alpha 0 and 1 against montecarlo's d_sym."""
    E, tasks, experts = data["errors"], data["tasks"], data["experts"]
    idx = [tasks.index(e) for e in experts]
    exclude = torch.tensor([[e == t for e in experts] for t in tasks])
    best = torch.where(exclude, torch.full_like(E, float("inf")), E).min(1).values
    base = _chosen_errors(E, _mask(_scores(mc[idx], mc, None, 0.0), exclude))
    expert_task = torch.tensor(data["is_expert_task"])
    out: dict[str, Any] = {}
    for meta, keep in {"loo": expert_task, "mixed": ~expert_task, "lodo": torch.ones_like(expert_task)}.items():
        for a in (0.0, 1.0):
            chosen = _chosen_errors(E, _mask(_scores(X[idx], X, T0[idx], a), exclude))
            out[f"{meta}: P alpha={a} - montecarlo d_sym"] = bootstrap(chosen[keep], base[keep], best[keep])
    return out


def stability(run: dict[str, Any], X: torch.Tensor) -> dict[str, float]:
    """Seed-to-seed d_sym of the first tasks against the mean d_sym between different tasks."""
    if not run["again"]:
        return {}
    A = torch.stack([e.vector for e in run["again"]]).float()
    self_d = cdist(A, X[:A.shape[0]]).diagonal()
    d = cdist(X, X)
    off = d[~torch.eye(d.shape[0], dtype=torch.bool)]
    return {"seed_to_seed_d_sym": round(float(self_d.mean()), 4), "between_tasks_d_sym": round(float(off.mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--out", type=Path, default=RESULTS / "variational_selection.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # the unconverged warning: its figure is reported instead
    data = load(PACK)
    mc = data["X"].float()
    out: dict[str, Any] = {"ground_truth": PACK.name, "alphas": list(ALPHAS), "runs": {},
                           "montecarlo": {"H": evaluate(data, mc, None)}}
    if args.out.is_file() and set(args.runs) != set(RUNS):  # a subset: keep the other runs' committed results
        kept = json.loads(args.out.read_text()).get("runs", {})
        out["runs"].update({k: v for k, v in kept.items() if k in RUNS and k not in args.runs})
    for tag in args.runs:
        run = embed_zoo(RUNS[tag], tag, seed_tasks=STABILITY_TASKS)
        H, P, T0 = conventions(run["embeddings"])
        lates = [e.config("method_config").get("late_change_fraction") for e in run["embeddings"]]
        lates = [x for x in lates if x is not None]
        entry: dict[str, Any] = {
            "fisher_options": RUNS[tag], "seconds_per_task": round(sum(run["seconds"]) / len(run["seconds"]), 1),
            "late_change_fraction": {"mean": round(sum(lates) / len(lates), 4), "max": round(max(lates), 4)},
            "zero_entries": round(float((H == 0).float().mean()), 4),
            "norm": [round(float(H.norm(dim=1).min()), 3), round(float(H.norm(dim=1).max()), 3)],
            "stability_H": stability(run, H),
            "H": evaluate(data, H, None), "P": evaluate(data, P, T0),
            "paired_bootstrap": intervals(data, mc, P, T0)}
        if run["montecarlo_check"]:
            entry["montecarlo_check_cosine"] = {
                data["tasks"][i]: round(float(torch.nn.functional.cosine_similarity(e.vector, mc[i], dim=0)), 5)
                for i, e in run["montecarlo_check"]}
        out["runs"][tag] = entry
        print(json.dumps({tag: {k: v for k, v in entry.items() if k not in ("H", "P")}}, indent=1), flush=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(args.out)
    print(format_table(out))
    return 0


def format_table(res: dict[str, Any]) -> str:
    """Markdown: relative error increase per meta-task for d_sym and d_asym at the best-lodo alpha."""
    lines = ["| embedding | loo | mixed | lodo | lodo, alpha by CV |", "|---|---:|---:|---:|---:|"]

    def row(label: str, ev: dict[str, Any], key: str = "alpha=0.0") -> str:
        cells = [f"{100 * ev[m][key]['relative_error_increase']:+.1f}%" for m in ("loo", "mixed", "lodo")]
        cv = ev["lodo"].get("alpha_cv")
        cells.append(f"{100 * cv['relative_error_increase']:+.1f}%" if cv else "-")
        return f"| {label} | " + " | ".join(cells) + " |"

    mc = res["montecarlo"]["H"]
    lines.append("| chance | " + " | ".join(f"{100 * mc[m]['chance']['relative_error_increase']:+.1f}%"
                                          for m in ("loo", "mixed", "lodo")) + " | - |")
    lines.append(row("montecarlo, d_sym", mc))
    for tag, entry in res["runs"].items():
        lines.append(row(f"{tag}: H, d_sym", entry["H"]))
        lines.append(row(f"{tag}: P, d_sym", entry["P"]))
        for a in res["alphas"][1:]:
            if f"alpha={a}" in entry["P"]["lodo"]:  # runs kept from an earlier sweep stop at 1.0
                lines.append(row(f"{tag}: P, d_asym alpha={a}", entry["P"], f"alpha={a}"))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
