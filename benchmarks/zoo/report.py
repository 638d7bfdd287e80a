"""Markdown tables of a reproduction run (pasted into BENCHMARKS.md).

    python -m benchmarks.zoo.report benchmarks/results/reproduce_small.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

LABELS = {
    "chance": "chance (expected)",
    "generic_imagenet": "always ImageNet (generic)",
    "static_best_on_other_tasks": "static: best mean error on other tasks",
    "logme": "LogME (every expert's features)",
    "oracle": "oracle",
}


def _pct(v: float | None) -> str:
    return "-" if v is None else f"+{100 * v:.1f}%" if v >= 0 else f"{100 * v:.1f}%"


def _num(v: float | None, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def label(name: str, alpha: float) -> str:
    if name in LABELS:
        return LABELS[name]
    base, _, method = name.partition("[")
    method = method.rstrip("]")
    base = {"d_asym": f"d_asym (alpha={alpha:g})", "model2vec": "MODEL2VEC (leave-one-out)"}.get(base, base)
    return f"{base}, {method}"


def methods_table(result: dict[str, Any]) -> str:
    alpha = result["config"]["report_alpha"]
    metas = list(result["meta_tasks"])
    head = "| method | " + " | ".join(f"{m}: rel. err. incr. | {m}: w. tau | {m}: top-1" for m in metas) + " |"
    sep = "|---|" + "---|---|---|" * len(metas)
    lines = [head, sep]
    first = result["meta_tasks"][metas[0]]["methods"]
    for name in first:
        cells = []
        for m in metas:
            r = result["meta_tasks"][m]["methods"][name]
            cells += [_pct(r["relative_error_increase"]), _num(r["weighted_tau"], 2), _num(r["top1"], 2)]
        lines.append(f"| {label(name, alpha)} | " + " | ".join(cells) + " |")
    best = [result["meta_tasks"][m]["methods"]["oracle"]["mean_best_error"] for m in metas]
    lines.append("| *mean best error* | " + " | ".join(f"*{100 * b:.2f}%* | | " for b in best) + " |")
    return "\n".join(lines)


def per_task_table(result: dict[str, Any]) -> str:
    alpha = result["config"]["report_alpha"]
    metas = list(result["meta_tasks"])
    lines = ["| method | " + " | ".join(f"{m}: mean of per-task ratios" for m in metas) + " |",
             "|---|" + "---|" * len(metas)]
    for name in result["meta_tasks"][metas[0]]["methods"]:
        lines.append(f"| {label(name, alpha)} | " + " | ".join(
            _pct(result["meta_tasks"][m]["methods"][name]["relative_error_increase_per_task"]) for m in metas) + " |")
    return "\n".join(lines)


def sweep_table(result: dict[str, Any]) -> str:
    metas = list(result["meta_tasks"])
    methods = list(result["meta_tasks"][metas[0]]["alpha_sweep"])
    alphas = list(result["meta_tasks"][metas[0]]["alpha_sweep"][methods[0]])
    lines = ["| meta-task / estimator | " + " | ".join(f"a={a}" for a in alphas) + " |",
             "|---|" + "---|" * len(alphas)]
    for m in metas:
        for e in methods:
            sw = result["meta_tasks"][m]["alpha_sweep"][e]
            lines.append(f"| {m} / {e} | " + " | ".join(_pct(sw[a]["relative_error_increase"]) for a in alphas) + " |")
    return "\n".join(lines)


def cost_table(result: dict[str, Any]) -> str:
    lines = ["| method | networks run per query | forward passes per query (mean) | seconds per query (mean) |",
             "|---|---|---|---|"]
    for name, c in result["cost_per_query"].items():
        passes = c.get("forward_passes_mean", c.get("probe_forward_passes_mean"))
        lines.append(f"| {name} | {c['networks_run']} | {passes:.0f} | {c['seconds_mean']:.1f} |")
    return "\n".join(lines)


def error_matrix_table(result: dict[str, Any]) -> str:
    em = result["error_matrix"]
    ex = em["experts"]
    short = [e.replace("generic_imagenet", "generic") for e in ex]
    lines = ["| task | " + " | ".join(short) + " |", "|---|" + "---|" * len(ex)]
    for t, row in zip(em["tasks"], em["errors"], strict=True):
        best = min(v for e, v in zip(ex, row, strict=True) if e != t and e != "generic_imagenet")
        cells = []
        for e, v in zip(ex, row, strict=True):
            s = f"{100 * v:.0f}"
            if e == t:
                s = f"({s})"
            elif v == best and e != "generic_imagenet":
                s = f"**{s}**"
            cells.append(s)
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bootstrap_ci(result: dict[str, Any], reps: int = 2000, seed: int = 0) -> dict[str, dict[str, list[float]]]:
    """95% bootstrap intervals (tasks resampled) of the relative error increase, per meta-task and method."""
    import numpy as np

    em = result["error_matrix"]
    E = np.array(em["errors"])
    out: dict[str, dict[str, list[float]]] = {}
    rng = np.random.default_rng(seed)
    for meta, res in result["meta_tasks"].items():
        ti = [em["tasks"].index(t) for t in res["tasks"]]
        cols = [em["experts"].index(e) for e in res["experts"]]
        err = E[np.ix_(ti, cols)].copy()
        for i, t in enumerate(res["tasks"]):
            for j, e in enumerate(res["experts"]):
                if e == t:
                    err[i, j] = np.nan
        best = np.nanmin(err, 1)
        chosen = {"chance": np.nanmean(err, 1), "generic_imagenet": E[ti, em["experts"].index("generic_imagenet")]}
        for name, ch in res["choices"].items():
            chosen[name] = err[np.arange(len(ti)), ch]
        idx = rng.integers(0, len(ti), size=(reps, len(ti)))
        out[meta] = {}
        for name, c in chosen.items():
            r = c[idx].mean(1) / best[idx].mean(1) - 1
            out[meta][name] = [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]
    return out


def ci_table(result: dict[str, Any]) -> str:
    ci = bootstrap_ci(result)
    alpha = result["config"]["report_alpha"]
    metas = list(ci)
    lines = ["| method | " + " | ".join(f"{m}: 95% interval" for m in metas) + " |", "|---|" + "---|" * len(metas)]
    for name in result["meta_tasks"][metas[0]]["methods"]:
        if name == "oracle" or name not in ci[metas[0]]:
            continue
        cells = [f"{_pct(ci[m][name][0])} .. {_pct(ci[m][name][1])}" if name in ci[m] else "-" for m in metas]
        lines.append(f"| {label(name, alpha)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(result: dict[str, Any]) -> str:
    return "\n\n".join([methods_table(result), ci_table(result), per_task_table(result), sweep_table(result),
                        cost_table(result), error_matrix_table(result)])


if __name__ == "__main__":
    print(markdown(json.loads(Path(sys.argv[1]).read_text())))
