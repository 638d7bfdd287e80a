"""The zoo's tasks embedded again with their labels shuffled: a per-task "domain only" Fisher.

    python -m benchmarks.label_shuffle     # ~3 min on 2 CPUs (36 embeddings, cached), then ~10 s
    # -> benchmarks/results/label_shuffle.{json,md}, zoo_embeddings_small_shuffled.safetensors

Two uses of the same embeddings, both asked by issue 12 and measured on the four meta-tasks of
:mod:`benchmarks.selection_novel` (loo, mixed, lodo, novel), over the three ground-truth
replicates, with each replicate's own errors and with their mean:

- **A t0 per expert.** The issue lists "the probe's Fisher ... with shuffled labels at matched N"
  among the candidate trivial tasks. Here each expert's t0 is its *own* task's images with the
  labels permuted (same N, same pipeline): nothing about the labels can be learned, so
  ``d_sym(F_e, S_e)`` is how far the expert's task is from its own images' "no task", the task
  complexity the paper's asymmetric term is for. Swept over alpha, single-stage and as the
  two-stage shortlist.
- **A label-specific view.** ``log F_t - log S_t`` (centred, cosine distance) removes what the
  images alone put into the Fisher. Alone, as a shortlist, gated by "no expert is near" (the
  nearest d_sym above tau), blended into d_sym, and as extra shortlist slots beside d_sym's.

The shuffled labels are a seeded permutation of the task's own labels (class counts kept);
everything else (images, 300-sample cap, seed, montecarlo, lite0 at 32 px) is the packed
embeddings' pipeline, checked by re-embedding the first task unshuffled (cosine to the pack).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import selection_quality as sq
from benchmarks.selection_novel import LABELS, _candidates
from t2v_hub.selection.distances import cdist

PACK = sq.RESULTS / "zoo_embeddings_small_shuffled.safetensors"
METAS = ("loo", "mixed", "lodo", "novel")


def embed_shuffled(out: Path = PACK) -> Path:
    """The 36 tasks' montecarlo embeddings with permuted labels, packed (each cached under the zoo's out/)."""
    from safetensors.torch import save_file

    from benchmarks.reproduce import DEFAULT_OUT, Cache, log, prepare
    from benchmarks.zoo import data as D
    from benchmarks.zoo.configs import get_config
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.task2vec import TensorTask, embed

    cfg = get_config("small")
    torch.set_num_threads(cfg.threads)
    zoo = prepare(cfg, Cache(DEFAULT_OUT / "small"))
    names = json.loads((sq.RESULTS / "reproduce_small.json").read_text())["error_matrix"]["tasks"]
    folder = DEFAULT_OUT / "small" / "embeddings" / "montecarlo_shuffled"
    folder.mkdir(parents=True, exist_ok=True)
    ref = sq.load(sq.PACK)["X"]
    vectors, check = [], None
    for k, name in enumerate(names):
        t = zoo["tasks"][name]
        x = D.normalise(zoo["crops"][t.pool][torch.as_tensor(t.train_idx)], zoo["data_config"])
        opts = dict(max_samples=cfg.embed.max_samples, seed=cfg.seed, mc_samples=cfg.embed.mc_samples,
                    batch_size=cfg.embed.batch_size, input_size=cfg.input_size)
        if k == 0:  # the pipeline is the pack's: the first task unshuffled reproduces its vector
            e = embed(TensorTask(x, torch.as_tensor(t.train_y), {"dataset_id": f"zoo/{name}"}), cfg.arch,
                      "montecarlo", **opts)
            check = float(torch.nn.functional.cosine_similarity(e.vector, ref[0], dim=0))
        path = folder / f"{name}.safetensors"
        if not path.is_file():
            log(f"embedding {name} with shuffled labels...")
            y = torch.as_tensor(np.random.default_rng(1234 + k).permutation(t.train_y))
            embed(TensorTask(x, y, {"dataset_id": f"zoo/{name}/shuffled"}), cfg.arch, "montecarlo", **opts).save(path)
        vectors.append(Task2VecEmbedding.load(path).vector)
    tmp = out.with_suffix(".tmp")
    save_file({"vectors": torch.stack(vectors).contiguous()}, str(tmp),
              metadata={"names": json.dumps(names), "labels": "seeded permutation (1234 + task index)",
                        "unshuffled_first_task_cosine_to_pack": f"{check:.6f}"})
    tmp.replace(out)
    return out


def _cos_d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1)
    return 1 - a @ b.T


def _union(first: torch.Tensor, second: torch.Tensor, ka: int, kb: int, exclude: torch.Tensor) -> torch.Tensor:
    """Ranks: ``first``'s top ``ka``, then ``second``'s best ``kb`` not yet in, then the rest in ``first``'s order."""
    out = torch.full_like(first, float("nan"))
    for i in range(first.shape[0]):
        ok = [e for e in range(first.shape[1]) if not exclude[i, e]]
        by_a = sorted(ok, key=lambda e: float(first[i, e]))
        short = by_a[:ka] + [e for e in sorted(ok, key=lambda e: float(second[i, e])) if e not in by_a[:ka]][:kb]
        for r, e in enumerate(short + [e for e in by_a if e not in short]):
            out[i, e] = float(r)
    return out


def run() -> dict[str, Any]:
    from safetensors import safe_open

    if not PACK.is_file():
        embed_shuffled()
    datas = {LABELS[p.name]: sq.load(p) for p in sq.REPLICATES if p.is_file()}
    first = next(iter(datas.values()))
    with safe_open(str(PACK), "pt") as f:
        if json.loads(f.metadata()["names"]) != first["tasks"]:
            raise SystemExit(f"{PACK.name} lists other tasks; delete it and rerun")
        S, check = f.get_tensor("vectors"), f.metadata()["unshuffled_first_task_cosine_to_pack"]
    X, tasks, experts = first["X"], first["tasks"], first["experts"]
    ei = [tasks.index(e) for e in experts]
    d_sym = cdist(X[ei], X).T
    L = torch.log(X + 1e-8) - torch.log(S + 1e-8)
    L = L - L.mean(1, keepdim=True)
    label_view = _cos_d(L, L[ei])
    term = torch.stack([cdist(X[j:j + 1], S[j:j + 1])[0, 0] for j in ei])  # d_sym(F_e, S_e)
    mean_errors = torch.stack([d["errors"] for d in datas.values()]).mean(0)

    def nearest(ex: torch.Tensor) -> torch.Tensor:
        return sq._mask(d_sym, ex).nan_to_num(nan=float("inf")).min(1).values[:, None]

    # name -> (scores given the exclusions, shortlist K or None for single-stage)
    rows: dict[str, tuple[Any, int | None]] = {"d_sym": (lambda ex: d_sym, None),
                                                "two_stage[d_sym, K=3]": (lambda ex: d_sym, 3)}
    for a in (0.15, 0.3, 0.5, 1.0):
        rows[f"d_asym[t0 = own shuffled, alpha={a}]"] = (lambda ex, a=a: d_sym - a * term[None, :], None)
        rows[f"two_stage[d_asym t0 = own shuffled, alpha={a}, K=3]"] = (lambda ex, a=a: d_sym - a * term[None, :], 3)
    rows["label view"] = (lambda ex: label_view, None)
    rows["two_stage[label view, K=3]"] = (lambda ex: label_view, 3)
    for tau in (0.4, 0.45, 0.5):
        rows[f"label view if nearest d_sym > {tau}, else d_sym"] = (
            lambda ex, tau=tau: torch.where(nearest(ex) > tau, label_view, d_sym), None)
    for w in (0.2, 0.5):
        rows[f"d_sym + {w} label view"] = (lambda ex, w=w: d_sym + w * label_view, None)
    for ka, kb in ((2, 1), (3, 1)):
        rows[f"two_stage[d_sym top {ka} + label view top {kb}]"] = (
            lambda ex, ka=ka, kb=kb: _union(d_sym, label_view, ka, kb, ex), ka + kb)
    rows["logme_all"] = (None, None)
    out: dict[str, Any] = {"replicates": list(datas), "unshuffled_first_task_cosine_to_pack": float(check),
                           "asymmetric_term_quantiles_0_50_100": [float(q) for q in term.quantile(torch.tensor([0, .5, 1.]))],
                           "d_sym_std": float(d_sym.std()), "methods": {}}
    for name, (fn, k) in rows.items():
        res: dict[str, Any] = {}
        for meta in METAS:
            vals: dict[str, list[float]] = {"own": [], "mean": []}
            for data in datas.values():
                keep, ex, _ = _candidates(data, meta)
                if fn is None:
                    ranked = -data["logme"]
                else:
                    sc = fn(ex)
                    ranked = sq.two_stage(sq._mask(sc, ex), data["logme"], k) if k else sc
                for truth, G in (("own", data["errors"]), ("mean", mean_errors)):
                    Gk, exk = G[keep], ex[keep]
                    best = torch.where(exk, torch.full_like(Gk, float("inf")), Gk).min(1).values
                    vals[truth].append(sq._rel_increase(sq._chosen_errors(Gk, sq._mask(ranked[keep], exk)), best))
            res[meta] = {t: sum(v) / len(v) for t, v in vals.items()}
        out["methods"][name] = res
    return out


def write(res: dict[str, Any]) -> str:
    (sq.RESULTS / "label_shuffle.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = ["# Shuffled-label embeddings of the zoo's tasks: a t0 per expert, and a label-specific view", "",
             f"Replicate means over {', '.join(res['replicates'])}; own errors / mean errors. Unshuffled check: "
             f"cosine {res['unshuffled_first_task_cosine_to_pack']:.6f} to the pack.", "",
             "| method | " + " | ".join(METAS) + " |", "|---|" + "---|" * len(METAS)]
    for name, r in res["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[m]['own']:+.1f} / {100 * r[m]['mean']:+.1f}%"
                                                  for m in METAS) + " |")
    text = "\n".join(lines) + "\n"
    (sq.RESULTS / "label_shuffle.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    import argparse

    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(write(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
