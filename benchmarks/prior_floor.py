"""A prior floor as montecarlo's trivial term: the variational convention, without the variational run.

    python -m benchmarks.prior_floor     # ~1 min on 2 CPUs; writes benchmarks/results/prior_floor.json

With variational embeddings, d_asym changes choices when each expert's own learned prior is its
t0 and distances compare precisions ``P = Ĥ + (β/2)λ²`` (:mod:`t2v_hub.selection.prior_term`).
A montecarlo embedding has no learned prior, but the prior the variational run *starts* from is
a property of the probe alone: ``λ² = 1 / mean(w²)`` per layer. This tries that floor on the
three ground-truth replicates' montecarlo packs (no image is recomputed):

    P = N^k F + c λ²[layer],   t0 = c λ²[layer],   d_asym = d_sym(P_e, P_t) - α d_sym(P_e, t0)

for ``k`` 0 (the Fisher as stored) or 1 (scaled by the samples the embedding used, as a posterior
precision grows with N), a sweep of the floor's weight ``c`` and of ``α``. Meta-tasks and the
metric are those of :mod:`benchmarks.selection_quality`; the reference is montecarlo's plain
d_sym on the same pack.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from benchmarks.selection_quality import REPLICATES, RESULTS, _chosen_errors, _mask, _rel_increase, load
from t2v_hub.probes import create_probe
from t2v_hub.selection.distances import cdist

FLOORS = (1e-9, 1e-8, 1e-7, 1e-6, 1e-4)
ALPHAS = (0.0, 0.15, 0.5, 1.0)
MAX_SAMPLES = 300  # the zoo's embed.max_samples: what N an embedding used


def layer_prior(probe: str, input_size: int) -> torch.Tensor:
    """``1 / mean(w²)`` of each filter's layer in the probe's offline weights, per filter."""
    p = create_probe(probe, 2, input_size=input_size)
    params = dict(p.model.named_parameters())
    lam = torch.empty(p.layout.dim)
    for name, (lo, hi) in p.layout.offsets().items():
        lam[lo:hi] = 1.0 / params[name].detach().float().pow(2).mean()
    return lam


def sweep(pack: Any, lam: torch.Tensor, n: torch.Tensor) -> dict[str, Any]:
    d = load(pack)
    E, tasks, experts = d["errors"], d["tasks"], d["experts"]
    exclude = torch.tensor([[e == t for e in experts] for t in tasks])
    best = torch.where(exclude, torch.full_like(E, float("inf")), E).min(1).values
    expert_task = torch.tensor(d["is_expert_task"])
    rows = {"loo": expert_task, "mixed": ~expert_task, "lodo": torch.ones_like(expert_task)}
    idx = [tasks.index(e) for e in experts]

    def score(s: torch.Tensor) -> dict[str, float]:
        chosen = _chosen_errors(E, _mask(s, exclude))
        return {m: round(100 * _rel_increase(chosen[k], best[k]), 1) for m, k in rows.items()}

    out: dict[str, Any] = {"d_sym (montecarlo, as stored)": score(cdist(d["F"], d["X"]).T)}
    for k in (0, 1):
        for c in FLOORS:
            P = d["X"] * (n[:, None] if k else 1.0) + c * lam[None]
            own = cdist(P[idx], (c * lam)[None])[:, 0]
            to_task = cdist(P[idx], P).T
            out[f"N^{k}, c={c:g}"] = {f"alpha={a}": score(to_task - a * own[None]) for a in ALPHAS}
    return out


def main() -> int:
    first = load(REPLICATES[0])
    size = 32  # the small zoo's probe input (the packs record it)
    lam = layer_prior("tf_efficientnet_lite0", size)
    info = json.loads((RESULTS / "reproduce_small.json").read_text())["tasks"]
    n = torch.tensor([float(min(info[t]["num_train"], MAX_SAMPLES)) for t in first["tasks"]])
    res = {"probe": "tf_efficientnet_lite0", "input_size": size, "floors": FLOORS, "alphas": ALPHAS,
           "replicates": {p.name: sweep(p, lam, n) for p in REPLICATES if p.is_file()}}
    # The best setting per replicate (mean of the three meta-tasks), next to d_sym.
    summary = {}
    for name, r in res["replicates"].items():
        cells = [(sum(v.values()) / 3, key, a) for key, sw in r.items() if key.startswith("N^")
                 for a, v in sw.items()]
        m, key, a = min(cells)
        summary[name] = {"best_setting": f"{key}, {a}", "best_mean": round(m, 1), "best": r[key][a],
                         "d_sym": r["d_sym (montecarlo, as stored)"]}
    res["summary"] = summary
    (RESULTS / "prior_floor.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
