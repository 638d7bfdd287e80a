"""`recommend`'s own ranking of variational experts, on the zoo: the product path, not a re-derivation.

    python -m benchmarks.variational_recommend   # ~1 min with the cache of variational_selection
                                                 # writes benchmarks/results/variational_recommend.json

The 36 zoo tasks' Gauss-Newton variational embeddings (those of
``python -m benchmarks.variational_selection``, cached under ``benchmarks/zoo/out/small``;
recomputed if absent, ~7 min) are ranked by :func:`t2v_hub.selection.scoring.rank_experts`,
exactly as ``t2v-hub recommend --method variational`` ranks a hub's experts: each task against
the 12 experts' embeddings (its own expert left out), with the default trivial term (each
expert's own learned prior, :mod:`t2v_hub.selection.prior_term`) at the default alpha, at 0
(d_sym on the precisions) and at 1. Scored against the pack's ground truth (replicate A) as in
:mod:`benchmarks.selection_quality`. The figures must equal ``variational_selection``'s
reference-convention sweep at the same alphas: that is the check that the product implements
what was measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch

from benchmarks.selection_quality import PACK, RESULTS, _rel_increase, load
from benchmarks.variational_selection import RUNS, embed_zoo
from t2v_hub.constants import VARIATIONAL_ASYM_ALPHA
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.selection.scoring import rank_experts


@dataclass
class _Expert:
    repo_id: str
    embedding: Task2VecEmbedding
    task: str = ""
    url: str = ""


def run() -> dict[str, Any]:
    data = load(PACK)
    embs = dict(zip(data["tasks"], embed_zoo(RUNS["gauss_newton"], "gauss_newton")["embeddings"], strict=True))
    E, tasks, experts = data["errors"], data["tasks"], data["experts"]
    expert_task = torch.tensor(data["is_expert_task"])
    rows = {"loo": expert_task, "mixed": ~expert_task, "lodo": torch.ones_like(expert_task)}
    best = torch.tensor([min(float(E[i, k]) for k, e in enumerate(experts) if e != t) for i, t in enumerate(tasks)])
    out: dict[str, Any] = {"embeddings": "gauss_newton variational (variational_selection's cache)",
                           "ground_truth": PACK.name, "default_alpha": VARIATIONAL_ASYM_ALPHA, "alphas": {}}
    picks: dict[float, list[int]] = {}
    for alpha in (VARIATIONAL_ASYM_ALPHA, 0.0, 1.0):
        notes: list[str] = []
        chosen, picked = torch.empty(len(tasks)), []
        for i, t in enumerate(tasks):
            cands = [_Expert(e, embs[e]) for e in experts if e != t]
            top = rank_experts(embs[t], cands, alpha=alpha, top_k=1, notes=notes)[0]
            j = experts.index(top.repo_id)
            picked.append(j)
            chosen[i] = E[i, j]
        picks[alpha] = picked
        out["alphas"][str(alpha)] = {
            "relative_error_increase": {m: _rel_increase(chosen[k], best[k]) for m, k in rows.items()},
            "notes": sorted(set(notes)),
        }
    for alpha in (VARIATIONAL_ASYM_ALPHA, 1.0):
        out["alphas"][str(alpha)]["choices_changed_vs_alpha_0"] = {
            m: int(sum(picks[alpha][i] != picks[0.0][i] for i in range(len(tasks)) if bool(k[i])))
            for m, k in rows.items()}
    return out


def main() -> int:
    res = run()
    (RESULTS / "variational_recommend.json").write_text(json.dumps(res, indent=1) + "\n")
    for a, r in res["alphas"].items():
        rel = " / ".join(f"{100 * v:+.1f}%" for v in r["relative_error_increase"].values())
        print(f"alpha {a}: loo / mixed / lodo {rel}; changed vs 0: {r.get('choices_changed_vs_alpha_0', '-')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
