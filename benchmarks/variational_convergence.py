"""Does the variational (robust) Fisher converge, and is its optimum a stable task embedding?

    python -m benchmarks.variational_convergence      # writes benchmarks/results/variational_convergence.json

One real task: 1,000 Fashion-MNIST training images of the four "tops" classes (250 each,
Debian package ``dataset-fashion-mnist``; without it the demo's 300-image
``examples/data/fashion_tops4``), tf_efficientnet_lite0 at 32 px with its offline ImageNet
weights, batch 32. Runs:

* ``montecarlo`` with two seeds (the exact estimator; its seed-to-seed distance is the
  noise floor an embedding can have here);
* ``variational`` with the supplement's recipe (the default, Adam at lr 1e-2) for 2 passes
  with two seeds and for 200 steps;
* the closed-form optimiser (``optimizer="fixed_point"``, 2 passes) from the reference start
  with two seeds, from the Laplace warm start (``init="laplace"``: Λ = 2F/β + λ² from a
  montecarlo pass) and from a narrow start (``var_init_scale=1e-4``: the probe's loss under
  the initial noise stays near its clean loss), and at β = 1e-5 and 1e-3;
* the Gauss-Newton fixed point (``optimizer="gauss_newton"``, 2 passes) from the reference,
  Laplace and narrow starts (two seeds for the reference and narrow ones) and at β = 1e-5.

Reported per run: seconds, steps, how much the log-precisions moved (``log_prec_change``),
the share of it in the last 10% of the steps (``late_change_fraction``, the convergence
criterion embeddings record: below 0.01 = settled), the share of filters whose slope
estimate is <= 0 after the first step and at the end (no positive curvature: at the prior,
Ĥ = 0), the expected loss under the posterior at the first step and over the last 10% of
the steps (the probe's clean loss on these images is about 0.53), the share of zero entries
of the embedding, its norm; and d_sym between every pair.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FP = {"optimizer": "fixed_point"}
GN = {"optimizer": "gauss_newton"}  # the default since it landed
ADAM = {"optimizer": "adam"}
RUNS: tuple[tuple[str, str, dict[str, Any], int], ...] = (
    ("montecarlo", "montecarlo", {}, 0),
    ("montecarlo, seed 1", "montecarlo", {}, 1),
    ("adam, 2 passes (the supplement's recipe)", "variational", ADAM, 0),
    ("adam, 2 passes, seed 1", "variational", ADAM, 1),
    ("adam, 200 steps", "variational", {**ADAM, "steps": 200}, 0),
    ("fixed point, 2 passes", "variational", FP, 0),
    ("fixed point, 2 passes, seed 1", "variational", FP, 1),
    ("fixed point, laplace start", "variational", {**FP, "init": "laplace"}, 0),
    ("fixed point, narrow start", "variational", {**FP, "var_init_scale": 1e-4}, 0),
    ("fixed point, beta 1e-5", "variational", {**FP, "beta": 1e-5}, 0),
    ("fixed point, beta 1e-5, seed 1", "variational", {**FP, "beta": 1e-5}, 1),
    ("fixed point, beta 1e-3", "variational", {**FP, "beta": 1e-3}, 0),
    ("fixed point, beta 1e-3, seed 1", "variational", {**FP, "beta": 1e-3}, 1),
    ("gauss-newton, 2 passes", "variational", GN, 0),
    ("gauss-newton, 2 passes, seed 1", "variational", GN, 1),
    ("gauss-newton, laplace start", "variational", {**GN, "init": "laplace"}, 0),
    ("gauss-newton, narrow start", "variational", {**GN, "var_init_scale": 1e-4}, 0),
    ("gauss-newton, narrow start, seed 1", "variational", {**GN, "var_init_scale": 1e-4}, 1),
    ("gauss-newton, beta 1e-5", "variational", {**GN, "beta": 1e-5}, 0),
)
TOPS = (0, 2, 4, 6)  # T-shirt, pullover, coat, shirt


def fashion_tops(per_class: int, seed: int = 0) -> Any:
    """A ``datasets.Dataset`` of Fashion-MNIST tops, or the demo folder when the package is absent."""
    import datasets
    import numpy as np
    from PIL import Image

    from benchmarks.zoo.data import FASHION_DIR, _read_idx, fashion_available

    if not fashion_available():
        return str(ROOT / "examples" / "data" / "fashion_tops4")
    x = _read_idx(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz"))
    y = _read_idx(os.path.join(FASHION_DIR, "train-labels-idx1-ubyte.gz"))
    rng = np.random.default_rng(seed)
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in TOPS]))
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["tshirt", "pullover", "coat", "shirt"])})
    return datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in x[idx]],
                                       "label": [TOPS.index(int(v)) for v in y[idx]]}, features=features)


def main(argv: list[str] | None = None) -> int:
    from t2v_hub.selection.distances import cdist
    from t2v_hub.task2vec import embed

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS / "variational_convergence.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", RuntimeWarning)  # the unconverged warning: measured below instead
    data = fashion_tops(args.per_class)
    n = len(data) if not isinstance(data, str) else 300
    rows: list[dict[str, Any]] = []
    vecs = []
    for name, method, opts, seed in RUNS:
        t0 = time.perf_counter()
        e = embed(data, "tf_efficientnet_lite0", method, input_size=32, max_samples=n, batch_size=32, seed=seed,
                  fisher_options=opts or None, quiet=True)
        cfg = e.config("method_config") if method == "variational" else {}
        rows.append({"run": name, "seconds": round(time.perf_counter() - t0, 1), "steps": cfg.get("steps_done"),
                     "log_prec_change": cfg.get("log_prec_change"),
                     "late_change_fraction": cfg.get("late_change_fraction"),
                     # the same in log-units: what moved over the last 10% of the steps, whatever the start's distance
                     "late_change_abs": (round(cfg["late_change_fraction"] * cfg["log_prec_change"], 4)
                                         if cfg.get("late_change_fraction") is not None else None),
                     "nonpositive_slope_first_step": cfg.get("nonpositive_slope_first_step"),
                     "nonpositive_slope_end": cfg.get("nonpositive_slope_end"),
                     "expected_loss_first_step": cfg.get("expected_loss_first_step"),
                     "expected_loss_end": cfg.get("expected_loss_end"),
                     "zero_entries": round(float((e.vector == 0).float().mean()), 4), "norm": e.norm})
        vecs.append(e.vector)
        print(json.dumps(rows[-1]), flush=True)
    d = cdist(torch.stack(vecs), torch.stack(vecs))
    out = {"dataset": "Fashion-MNIST tops (Debian dataset-fashion-mnist)" if not isinstance(data, str) else data,
           "num_images": n, "batch_size": 32, "probe": "tf_efficientnet_lite0", "input_size": 32,
           "threads": args.threads, "runs": rows, "d_sym": [[round(float(x), 4) for x in row] for row in d]}
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    names = [r["run"] for r in rows]
    print("\nd_sym")
    for i, nm in enumerate(names):
        print(f"{nm:32s} " + " ".join(f"{float(d[i, j]):6.3f}" for j in range(len(names))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
