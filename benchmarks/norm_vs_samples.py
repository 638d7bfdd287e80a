"""Embedding norm vs number of training samples (TASK2VEC supplement, Fig. 2).

    python -m benchmarks.norm_vs_samples --config small   # writes benchmarks/results/reproduce_norm_vs_samples.{json,png}

For several zoo tasks with enough training images, embed a seeded random subset of
n images (n = 25, 50, 100, 200, 400) with the fixed ImageNet probe by each estimator,
and record the norm. The supplement reports that the norm grows with n for most
tasks; we count the tasks whose Spearman correlation between n and the norm is
positive (and those where it is 1: strictly increasing). Uses the pools cached by
``benchmarks.reproduce`` (built if missing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.reproduce import DEFAULT_OUT, RESULTS, Cache, log, prepare

TASKS = ("fashion10", "fashion_coarse5", "mnist10", "digits8_10", "cyrillic_upper32", "glyph_script3")
SIZES = (25, 50, 100, 200, 400)


def main(argv: list[str] | None = None) -> int:
    from benchmarks.zoo.configs import get_config

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--sizes", nargs="+", type=int, default=list(SIZES))
    ap.add_argument("--methods", nargs="+", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    cfg = get_config(args.config)
    torch.set_num_threads(cfg.threads)
    run_dir = DEFAULT_OUT / cfg.name
    import os

    os.environ.setdefault("T2V_HUB_CACHE", str(run_dir / "t2v_cache"))
    return _main(args, cfg, run_dir)


def _main(args: argparse.Namespace, cfg: Any, run_dir: Path) -> int:
    from benchmarks.zoo import data as D
    from t2v_hub.task2vec import TensorTask, embed

    cache = Cache(run_dir)
    zoo = prepare(cfg, cache)
    methods = args.methods or list(cfg.embed.methods)
    t0 = time.perf_counter()
    rows: dict[str, dict[str, Any]] = {}
    for m in methods:
        # Adam: the optimiser of the committed figures and of the reproduction's rows
        opts = {"steps": cfg.embed.variational_steps, "average_last": cfg.embed.variational_average_last,
                "optimizer": "adam"} if m == "variational" else {}
        rows[m] = {}
        for name in args.tasks:
            t = zoo["tasks"][name]
            x = D.normalise(zoo["crops"][t.pool][torch.as_tensor(t.train_idx)], zoo["data_config"])
            y = torch.as_tensor(t.train_y)
            sizes = [n for n in args.sizes if t.num_classes <= n <= len(y)]
            norms = []
            for n in sizes:
                key = f"norm_vs_samples/{m}/{name}/{n}"
                got = cache.get(key, repr((cfg.embed, cfg.input_size, cfg.seed, n)))
                if got is None:
                    log(f"{m} {name} n={n}")
                    tt = TensorTask(x, y, {"dataset_id": f"zoo/{name}"})
                    e = embed(tt, cfg.arch, m, max_samples=n, seed=cfg.seed, batch_size=cfg.embed.batch_size,
                              input_size=cfg.input_size, fisher_options=opts, mc_samples=cfg.embed.mc_samples)
                    got = cache.put(key, repr((cfg.embed, cfg.input_size, cfg.seed, n)), e.norm)
                norms.append(float(got))
            from scipy.stats import spearmanr

            rho = float(spearmanr(sizes, norms).statistic) if len(sizes) > 2 else float("nan")
            rows[m][name] = {"sizes": sizes, "norms": norms, "spearman": rho,
                             "last_over_first": norms[-1] / norms[0] if norms[0] > 0 else None}
    summary = {
        m: {"tasks": len(r), "increasing_spearman_gt0": sum(1 for v in r.values() if v["spearman"] > 0),
            "strictly_increasing": sum(1 for v in r.values() if np.all(np.diff(v["norms"]) > 0)),
            "largest_n_above_smallest_n": sum(1 for v in r.values() if v["norms"][-1] > v["norms"][0])}
        for m, r in rows.items()
    }
    out = {"config": cfg.name, "input_size": cfg.input_size, "sizes": args.sizes, "methods": rows,
           "summary": summary, "seconds": round(time.perf_counter() - t0, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reproduce_norm_vs_samples.json").write_text(json.dumps(out, indent=1) + "\n")
    plot(rows, args.out / "reproduce_norm_vs_samples.png")
    print(json.dumps(summary, indent=1))
    return 0


def plot(rows: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 3.6), squeeze=False)
    for ax, (m, r) in zip(axes[0], rows.items(), strict=True):
        for name, v in r.items():
            ax.plot(v["sizes"], np.array(v["norms"]) / v["norms"][-1], marker="o", label=name)
        ax.set_xscale("log")
        ticks = sorted({n for v in r.values() for n in v["sizes"]})
        ax.set_xticks(ticks, [str(n) for n in ticks])
        ax.minorticks_off()
        ax.set_xlabel("number of training samples")
        ax.set_ylabel("embedding norm / norm at largest n")
        ax.set_title(f"{m}", fontsize=9)
        ax.legend(fontsize=6)
    fig.suptitle("Norm of the TASK2VEC embedding vs samples (supplement Fig. 2)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
