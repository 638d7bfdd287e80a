"""The probe's CPU layout: channels-last (the default where the model allows it) against NCHW.

    python -m benchmarks.memory_format    # ~4 min on 2 CPUs; writes benchmarks/results/memory_format.json

``embed`` on the demo's 300 Fashion-MNIST images (``examples/data/fashion_tops4``) with the demo
probe (``tf_efficientnet_lite0``, offline weights) at 32 and 64 px, and a random-init resnet18 at
64 px; each configuration in both layouts, interleaved, ``reps`` times. Process CPU seconds of
the features pass, the Fisher pass and the whole call (the images are decoded once per task and
cached by the task object, so the first call of each configuration is a warm-up and not counted),
and the cosine between the two layouts' embeddings (same seed: only float rounding differs).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT / "examples" / "data" / "fashion_tops4"
CONFIGS = (("tf_efficientnet_lite0", 32, True), ("tf_efficientnet_lite0", 64, True), ("resnet18", 64, False))
THREADS = 2


def run(reps: int = 3) -> dict[str, Any]:
    import t2v_hub.run as R
    import t2v_hub.task2vec as T
    from t2v_hub.data import load_task

    torch.set_num_threads(THREADS)
    stages: dict[str, float] = {}
    for attr, stage in (("_batched_features", "features"), ("_fisher", "fisher")):
        fn = getattr(T, attr)

        def timed(*a: Any, _fn: Any = fn, _stage: str = stage, **k: Any) -> Any:
            c = time.process_time()
            try:
                return _fn(*a, **k)
            finally:
                stages[_stage] = stages.get(_stage, 0.0) + time.process_time() - c

        setattr(T, attr, timed)
    chosen = R.prefer_channels_last
    layouts = {"channels_last": chosen, "contiguous": lambda model, sample: "contiguous"}
    task = load_task(DATA)
    out: dict[str, Any] = {"threads": THREADS, "reps": reps, "images": task.num_samples, "configs": {}}
    for probe, px, pretrained in CONFIGS:
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in layouts}
        vectors: dict[str, torch.Tensor] = {}
        for rep in range(reps + 1):
            for name, fn in layouts.items():
                R.prefer_channels_last = fn
                stages.clear()
                c = time.process_time()
                e = T.embed(task, probe, "montecarlo", input_size=px, pretrained=pretrained, cache=False, quiet=True)
                total = time.process_time() - c
                assert e.metadata["memory_format"] == name, e.metadata["memory_format"]
                vectors[name] = e.vector
                if rep:  # rep 0 warms up (decoding, weights, allocator)
                    rows[name].append({**stages, "total": total})
        R.prefer_channels_last = chosen
        med = {k: {s: round(statistics.median(r[s] for r in v), 3) for s in ("features", "fisher", "total")}
               for k, v in rows.items()}
        out["configs"][f"{probe} @ {px}px"] = {
            "cpu_seconds_median": med,
            "speedup": {s: round(med["contiguous"][s] / med["channels_last"][s], 2) for s in med["contiguous"]},
            "cosine_between_layouts": round(float(torch.nn.functional.cosine_similarity(
                vectors["channels_last"], vectors["contiguous"], dim=0)), 7),
            "runs": rows,
        }
        print(json.dumps({k: v for k, v in out["configs"][f"{probe} @ {px}px"].items() if k != "runs"}), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    res = run()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_format.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
