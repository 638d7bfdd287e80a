"""Does the asymmetric term change which expert is chosen? An ablation over t0.

    python -m benchmarks.trivial_term --config small   # after benchmarks.reproduce; writes results/trivial_term.json

``d_asym(expert -> task) = d_sym(expert, task) - alpha * d_sym(expert, t0)``: the
second term depends on the expert only, a per-expert bonus. Its effect hinges on
how t0 ("a task with no information") is defined, which the paper leaves open
(the supplement calls it "the trivial zero embedding"; a literal zero vector makes
the cosine undefined). On the reproduction's real tasks and experts (montecarlo
embeddings, cached by ``benchmarks.reproduce``) this compares, over an alpha sweep:

- ``library``: the library's t0 (seeded noise images, random labels: its Fisher is
  ~4 orders of magnitude below real tasks', i.e. numerically the zero embedding);
- ``layer_mean_self``: each expert's own embedding with every filter replaced by its
  layer's mean (the public reference code builds t0 from the embedding itself by
  setting each filter to the layer's prior; the montecarlo Fisher has no prior, the
  layer mean is its analogue: "no preference among a layer's filters");
- ``constant``: one constant vector at the tasks' mean Fisher;
- ``log_norm``: no t0, the expert's log-norm (the supplement's "complexity") / 10.

Reported: the paper's relative error increase (lower is better) on both meta-tasks,
and the spread of the term across experts next to the spread of d_sym.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from benchmarks.reproduce import DEFAULT_OUT, RESULTS

ALPHAS = (0.0, 0.05, 0.15, 0.3, 0.6, 1.0)


def _layer_mean(v: torch.Tensor, segments: list[tuple[int, int]]) -> torch.Tensor:
    out = v.clone()
    for a, b in segments:
        out[a:b] = v[a:b].mean()
    return out


def main(argv: list[str] | None = None) -> int:
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.probes import create_probe
    from t2v_hub.selection.distances import cdist
    from t2v_hub.selection.metrics import evaluate_selection
    from t2v_hub.trivial import trivial_for

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("--method", default="montecarlo")
    ap.add_argument("--out", type=Path, default=RESULTS / "trivial_term.json")
    args = ap.parse_args(argv)
    run = DEFAULT_OUT / args.config
    res_path = RESULTS / f"reproduce_{args.config}.json"
    if not (run / "groundtruth.pt").is_file() or not res_path.is_file():
        raise SystemExit(f"run `python -m benchmarks.reproduce --config {args.config}` first ({run} is missing)")
    result = json.loads(res_path.read_text())
    gt = torch.load(run / "groundtruth.pt", weights_only=False)["value"]
    tasks = result["error_matrix"]["tasks"]
    experts = [e for e in result["error_matrix"]["experts"] if e in tasks]  # column 0 = generic model
    cols = [result["error_matrix"]["experts"].index(e) for e in experts]
    E = torch.tensor([[gt["errors"][t][c] for c in cols] for t in tasks])
    emb = {n: Task2VecEmbedding.load(run / "embeddings" / args.method / f"{n}.safetensors") for n in tasks}
    X = torch.stack([emb[n].vector for n in tasks])
    F = torch.stack([emb[n].vector for n in experts])
    D = cdist(F, X).T  # (tasks, experts)
    e0 = emb[experts[0]]
    size = e0.config("input_size")
    probe = create_probe(e0.probe, 2, pretrained=False, input_size=int(size[-1]) if isinstance(size, list) else None)
    segments = list(probe.layout.offsets().values())
    t0 = trivial_for(e0).vector
    terms = {
        "library": cdist(F, t0[None])[:, 0],
        "layer_mean_self": torch.stack([cdist(F[j : j + 1], _layer_mean(F[j], segments)[None])[0, 0]
                                        for j in range(len(experts))]),
        "constant": cdist(F, torch.full_like(t0, float(X.mean()))[None])[:, 0],
        "log_norm": F.norm(dim=1).log() / 10.0,
    }
    exclude = torch.tensor([[e == t for e in experts] for t in tasks])
    metas = {"pool_loo": [i for i, t in enumerate(tasks) if t in experts],
             "mixed": [i for i, t in enumerate(tasks) if t not in experts]}

    def rel(scores: torch.Tensor, idx: list[int]) -> float:
        s = scores.clone()
        s[exclude] = float("nan")
        return float(evaluate_selection(E[idx], s[idx], exclude[idx])["relative_error_increase"])

    out: dict[str, Any] = {
        "config": args.config, "method": args.method, "alphas": list(ALPHAS),
        "d_sym_spread_across_experts_per_task_median": float((D.max(1).values - D.min(1).values).median()),
        "terms": {},
    }
    for name, c in terms.items():
        out["terms"][name] = {
            "spread_across_experts": float(c.max() - c.min()),
            "relative_error_increase": {m: [rel(D - a * c[None, :], idx) for a in ALPHAS] for m, idx in metas.items()},
        }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"d_sym spread across experts (median over tasks): {out['d_sym_spread_across_experts_per_task_median']:.3f}")
    print(f"{'term':18s} {'spread':>7s}  " + "  ".join(f"a={a:<5g}" for a in ALPHAS))
    for name, r in out["terms"].items():
        for m, vals in r["relative_error_increase"].items():
            print(f"{name:18s} {r['spread_across_experts']:7.3f}  {m:8s} " + " ".join(f"{100 * v:+6.1f}%" for v in vals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
