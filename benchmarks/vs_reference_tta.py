"""Time to accuracy against the reference over seeds: ``python -m benchmarks.vs_reference --tta-seeds S``.

One run per side is one draw of the noise the measurement is about, so each side's Fisher pass is
rerun around its crossing of cosine 0.99 (:data:`TTA_FOCUS`) for ``S`` seeds, and the seconds to
the *median* cosine (and to every seed's) are reported -> ``benchmarks/results/vs_reference_tta_seeds.json``.
Each t2v-hub seed draws its own random image subset, as the reference's sampler does. Setting and
children: :mod:`benchmarks.vs_reference`.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.vs_reference import N_IMAGES, RESULTS, run_child

TTA_FOCUS = {"reference": (2560, 3200, 3840, 4480, 5120, 6400),
             "t2v-hub": (40, 60, 80, 100, 120, 160, 200, 240, 320, 400)}


def tta_seeds(seeds: int, keep_reference: bool = False) -> int:
    """Seconds to cosine 0.99 by the median (and the minimum) cosine over ``seeds`` runs, interleaved per seed.

    ``keep_reference``: reuse the reference's runs of the same seeds from the committed file (its grid
    takes ~4 min a seed) and rerun t2v-hub only.
    """
    import statistics

    path = RESULTS / "vs_reference_tta_seeds.json"
    runs: list[dict[str, Any]] = []
    if keep_reference:  # the reference's runs of the same seeds, from the committed file
        runs = [r for r in json.loads(path.read_text())["runs"] if r["impl"] == "reference"
                and r["seed"] < 10 + seeds and r["samples"] in TTA_FOCUS["reference"]]
    for seed in range(seeds):
        for impl in ("t2v-hub",) if keep_reference else ("reference", "t2v-hub"):
            grid = TTA_FOCUS[impl]
            r = run_child([impl, "montecarlo", str(N_IMAGES), str(10 + seed), "tta", ",".join(map(str, grid))])
            for row in r["tta"]:
                runs.append({"impl": impl, "seed": 10 + seed, **row})
                print(json.dumps(runs[-1]), flush=True)
    curve: dict[str, list[dict[str, Any]]] = {}
    for impl, grid in TTA_FOCUS.items():
        curve[impl] = []
        for n in grid:
            rows = [r for r in runs if r["impl"] == impl and r["samples"] == n]
            curve[impl].append({"samples": n, "median_cos_truth": round(statistics.median(r["cos_truth"] for r in rows), 5),
                                "min_cos_truth": round(min(r["cos_truth"] for r in rows), 5),
                                "median_fisher_cpu_s": round(statistics.median(r["fisher_cpu_s"] for r in rows), 2)})

    def reach(impl: str, level: float, key: str) -> float | None:
        ok = [c["median_fisher_cpu_s"] for c in curve[impl] if c[key] >= level]
        return min(ok) if ok else None

    out = {"seeds": seeds, "grid": TTA_FOCUS, "curve": curve, "runs": runs,
           "subset": "t2v-hub: a random subset of the images per seed (the reference's sampler draws its own)",
           "seconds_to_median_cos_0.99": {i: reach(i, 0.99, "median_cos_truth") for i in TTA_FOCUS},
           "seconds_to_every_seed_cos_0.99": {i: reach(i, 0.99, "min_cos_truth") for i in TTA_FOCUS}}
    s = out["seconds_to_median_cos_0.99"]
    if s["reference"] and s["t2v-hub"]:
        out["speedup_to_median_cos_0.99"] = round(s["reference"] / s["t2v-hub"], 1)
    out["reference_runs_reused"] = keep_reference
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=1))
    return 0
