"""Peak memory of `embed` as the task grows: the decode cache, streamed batches, the disk-backed cache.

    python -m benchmarks.memory            # writes benchmarks/results/memory.json

A synthetic task of N random 224 px RGB images (PNG-encoded in a `datasets.Dataset`, so they
are really decoded), embedded by ``montecarlo`` with timm's tiny ``test_efficientnet`` probe
at 224 px, batch 32, one process per run. Two figures, each minus the same process's value just
before ``embed`` (imports and the encoded dataset): the peak resident memory (``ru_maxrss``,
which counts the disk cache's pages while they are resident) and the peak anonymous memory
(``RssAnon``, sampled every 20 ms: what cannot be paged out to a file). Three ways of holding
the decoded images:

* ``materialised``: the old pipeline, one float32 N x 3 x 224 x 224 tensor (``TaskData.tensors``);
* ``streamed``: the uint8 decode cache in RAM, normalised batch by batch (``ImageRows``);
* ``streamed, disk cache``: the same with the decode cache file-backed
  (``T2V_HUB_DECODE_RAM_MB=0``), as it is for tasks above 2 GiB of crops.

The per-image cost of each (the slope over N) is what decides whether 100k images fit.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("materialised", "streamed", "streamed, disk cache")


def child(n: int, mode: str) -> dict[str, Any]:
    import io
    import resource

    import datasets
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(2)
    import t2v_hub.task2vec as T
    from t2v_hub.data.rows import as_rows
    from t2v_hub.data.task import TaskData

    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(buf, format="PNG")
        pngs.append({"bytes": buf.getvalue(), "path": None})
    ds = datasets.Dataset.from_dict({"image": pngs, "label": [i % 4 for i in range(n)]},
                                    features=datasets.Features({"image": datasets.Image(),
                                                                "label": datasets.ClassLabel(num_classes=4)}))
    if mode == "materialised":  # what the pipeline did before ImageRows
        streamed = TaskData.image_rows
        TaskData.image_rows = lambda self, cfg, **kw: as_rows(streamed(self, cfg, **kw).materialize())  # type: ignore[method-assign]
    import threading

    def anon_mb() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    anon0 = anon_mb()
    peak_anon = [anon0]
    done = threading.Event()

    def sample() -> None:  # the kernel keeps no peak of anonymous memory: sample it
        while not done.wait(0.02):
            peak_anon[0] = max(peak_anon[0], anon_mb())

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    T.embed(ds, "test_efficientnet", "montecarlo", input_size=224, batch_size=32, cache=False, quiet=True)
    done.set()
    th.join()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"n": n, "mode": mode, "before_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
            "embed_rss_mb": round(peak - base, 1), "embed_anon_mb": round(peak_anon[0] - anon0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1])))
        return 0
    rows = []
    for n in args.sizes:
        for mode in MODES:
            env = {**os.environ, "PYTHONPATH": str(ROOT), "T2V_HUB_CACHE": str(ROOT / ".t2v_cache" / "memory")}
            if mode.endswith("disk cache"):
                env["T2V_HUB_DECODE_RAM_MB"] = "0"
            proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", str(n), mode], env=env,
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    slopes = {}
    if len(args.sizes) >= 2:
        lo, hi = min(args.sizes), max(args.sizes)
        for mode in MODES:
            a = next(r for r in rows if r["n"] == lo and r["mode"] == mode)
            b = next(r for r in rows if r["n"] == hi and r["mode"] == mode)
            slopes[mode] = {k: round(1024 * (b[k] - a[k]) / (hi - lo), 1)  # KiB per image
                            for k in ("embed_rss_mb", "embed_anon_mb")}
    args.out.write_text(json.dumps({"runs": rows, "kib_per_image": slopes}, indent=1) + "\n")
    print(json.dumps(slopes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
