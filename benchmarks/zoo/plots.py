"""PNG plots of a reproduction run (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def make_plots(result: dict[str, Any], out: Path, name: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    em = result["error_matrix"]
    all_tasks, all_experts = em["tasks"], em["experts"]
    E = np.array(em["errors"])
    methods = list(next(iter(result["meta_tasks"].values()))["alpha_sweep"])
    main_m = "montecarlo" if "montecarlo" in methods else methods[0]

    # 1. error matrices with the selections (supplement Fig. 3)
    for meta, res in result["meta_tasks"].items():
        tasks, experts = res["tasks"], res["experts"]
        ti = [all_tasks.index(t) for t in tasks]
        cols = [all_experts.index(e) for e in experts] + [0]
        M = E[np.ix_(ti, cols)]
        fig, ax = plt.subplots(figsize=(1.0 + 0.55 * len(cols), 1.2 + 0.32 * len(tasks)))
        ax.imshow(M, cmap="viridis_r", aspect="auto", vmin=0, vmax=max(0.5, float(np.nanmax(M))))
        for i in range(len(tasks)):
            for j in range(len(cols)):
                excluded = j < len(experts) and experts[j] == tasks[i]
                ax.text(j, i, "x" if excluded else f"{100 * M[i, j]:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if M[i, j] > 0.3 else "black")
        for key, color, dx in ((f"d_asym[{main_m}]", "red", -0.3), (f"model2vec[{main_m}]", "orange", 0.0),
                               ("logme", "cyan", 0.3), ("oracle", "blue", 0.0)):
            ch = res["choices"].get(key)
            if not ch:
                continue
            for i, j in enumerate(ch):
                if key == "oracle":
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec=color, lw=1.5))
                else:
                    ax.plot(j + dx, i + 0.3, marker="^", color=color, ms=4, ls="none")
        ax.set_xticks(range(len(cols)), [*experts, "generic"], rotation=70, fontsize=7)
        ax.set_yticks(range(len(tasks)), tasks, fontsize=7)
        ax.set_title(f"{meta}: test error % (rows tasks, cols experts)\nbox = best; ^ red d_asym, orange MODEL2VEC, "
                     f"cyan LogME ({main_m})", fontsize=8)
        fig.tight_layout()
        f = out / f"reproduce_{name}_errors_{meta}.png"
        fig.savefig(f, dpi=90)
        plt.close(fig)
        files.append(f.name)

    # 2. alpha sweep of d_asym
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for meta, res in result["meta_tasks"].items():
        for m, sweep in res["alpha_sweep"].items():
            a = [float(k) for k in sweep]
            v = [100 * (sweep[k]["relative_error_increase"] or np.nan) for k in sweep]
            ax.plot(a, v, marker="o", label=f"{meta} / {m}")
        g = res["methods"]["generic_imagenet"]["relative_error_increase"]
        if g is not None:
            ax.axhline(100 * g, ls=":", lw=1, color="gray")
    ax.axvline(result["config"]["report_alpha"], ls="--", lw=0.8, color="k")
    ax.set_xlabel("alpha (weight of d_sym(expert, trivial))")
    ax.set_ylabel("relative error increase over best (%)")
    ax.set_title("d_asym selection vs alpha (dotted: always ImageNet)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    f = out / f"reproduce_{name}_alpha.png"
    fig.savefig(f, dpi=90)
    plt.close(fig)
    files.append(f.name)

    # 3. methods bar chart
    metas = list(result["meta_tasks"])
    names = [k for k in result["meta_tasks"][metas[0]]["methods"] if k != "oracle"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    w = 0.8 / len(metas)
    for k, meta in enumerate(metas):
        vals = [100 * (result["meta_tasks"][meta]["methods"][n]["relative_error_increase"] or 0) for n in names]
        ax.bar(np.arange(len(names)) + k * w, vals, w, label=meta)
    ax.set_xticks(np.arange(len(names)) + w * (len(metas) - 1) / 2, names, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("relative error increase (%)")
    ax.set_title("Selection methods (lower is better; oracle = 0)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    f = out / f"reproduce_{name}_methods.png"
    fig.savefig(f, dpi=90)
    plt.close(fig)
    files.append(f.name)
    return files
