"""How far the variational (robust) Fisher is from converged, and what a warm start buys.

    python -m benchmarks.variational_convergence      # writes benchmarks/results/variational_convergence.json

One real task (the demo's 4-class Fashion-MNIST sample, 200 images, tf_efficientnet_lite0
at 32 px, offline weights), embedded by ``variational`` with the reference start and
with the Laplace warm start (``init="laplace"``: Λ = 2F/β + λ² from a montecarlo pass),
each for the default 2 passes and for 200 and 1,500 optimisation steps, plus
``montecarlo``. Reported: seconds, how much the log-precisions moved
(``log_prec_change``) and the share of it in the last 10% of the steps
(``late_change_fraction``: ~0.1 = still drifting at a constant rate), and d_sym between
every pair of embeddings. If both starts reach the same optimum, their long runs
meet, and the warm start is closer to it early on.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
RUNS = (("montecarlo", "montecarlo", {}),
        ("reference, 2 passes", "variational", {}),
        ("laplace, 2 passes", "variational", {"init": "laplace"}),
        ("reference, 200 steps", "variational", {"steps": 200}),
        ("laplace, 200 steps", "variational", {"init": "laplace", "steps": 200}),
        ("reference, 1500 steps", "variational", {"steps": 1500}),
        ("laplace, 1500 steps", "variational", {"init": "laplace", "steps": 1500}))


def main(argv: list[str] | None = None) -> int:
    from t2v_hub.selection.distances import cdist
    from t2v_hub.task2vec import embed

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=str(ROOT / "examples" / "data" / "fashion_tops4"))
    ap.add_argument("--max-samples", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "variational_convergence.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # the unconverged warning: measured below instead
    rows: list[dict[str, Any]] = []
    vecs = []
    for name, method, opts in RUNS:
        t0 = time.perf_counter()
        e = embed(args.dataset, "tf_efficientnet_lite0", method, input_size=32, max_samples=args.max_samples,
                  seed=0, fisher_options=opts or None)
        cfg = e.config("method_config") if method == "variational" else {}
        rows.append({"run": name, "seconds": round(time.perf_counter() - t0, 1), "steps": cfg.get("steps_done"),
                     "log_prec_change": cfg.get("log_prec_change"),
                     "late_change_fraction": cfg.get("late_change_fraction"), "norm": e.norm})
        vecs.append(e.vector)
        print(json.dumps(rows[-1]), flush=True)
    d = cdist(torch.stack(vecs), torch.stack(vecs))
    out = {"dataset": "examples/data/fashion_tops4", "max_samples": args.max_samples, "probe": "tf_efficientnet_lite0",
           "input_size": 32, "runs": rows, "d_sym": [[round(float(x), 4) for x in row] for row in d]}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    names = [r["run"] for r in rows]
    print("\nd_sym")
    for i, n in enumerate(names):
        print(f"{n:24s} " + " ".join(f"{float(d[i, j]):6.3f}" for j in range(len(names))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
