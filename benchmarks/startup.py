"""Startup: how long until the CLI answers, and until `embed` runs its first batch.

    python -m benchmarks.startup          # writes benchmarks/results/startup.json

Wall-clock seconds from launching the process (median of ``--reps`` runs, after one
untimed warm-up run so the OS file cache is warm, as it is for a user's second command):

* ``t2v-hub --help`` and ``t2v-hub embed --help`` (the CLI's parser must not import torch);
* ``python -c "import t2v_hub"`` (the package root is lazy);
* ``recommend --dataset <saved embedding> --hub examples/zoo``: ranking the demo hub for an
  embedding computed earlier (the AutoML path; t0 cached by the warm-up run);
* ``embed`` to its first batch: ``t2v-hub embed`` on the demo's 300-image folder with the
  offline tf_efficientnet_lite0 at 32 px, stopped when the probe's first forward starts
  (listing the folder, creating the probe, loading its weights and decoding every image
  happen before that, so they are included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO_EMBEDDING = ROOT / "examples" / "zoo" / "t2v-zoo" / "mnist10" / "task2vec" / "tf_efficientnet_lite0.safetensors"
RESULTS = ROOT / "benchmarks" / "results"
FIRST_BATCH = (
    "import sys, time; t0 = float(sys.argv[1])\n"
    "from t2v_hub.probes import Probe\n"
    "def first(self, x):\n"
    "    print(f'FIRST_BATCH {time.time() - t0:.3f}', flush=True); raise SystemExit(0)\n"
    "Probe.features = first\n"
    "from t2v_hub.cli.main import main\n"
    "main(['embed', '--dataset', 'examples/data/fashion_tops4', '--probe', 'tf_efficientnet_lite0',\n"
    "      '--input-size', '32', '--no-cache', '--quiet', '--out', '/dev/null'])\n"
)


def _wall(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def _first_batch() -> float:
    proc = subprocess.run([sys.executable, "-c", FIRST_BATCH, repr(time.time())], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "T2V_HUB_CACHE": str(ROOT / ".t2v_cache" / "startup")})
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_BATCH"):
            return float(line.split()[1])
    raise SystemExit(f"embed did not reach its first batch:\n{proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS / "startup.json")
    args = ap.parse_args(argv)
    cli = str(Path(sys.executable).with_name("t2v-hub"))
    runs = {
        "t2v-hub --help": lambda: _wall([cli, "--help"]),
        "t2v-hub embed --help": lambda: _wall([cli, "embed", "--help"]),
        "import t2v_hub": lambda: _wall([sys.executable, "-c", "import t2v_hub"]),
        "embed to first batch": _first_batch,
        # The AutoML path: rank the demo hub for an embedding computed earlier (t0 cached by the warm-up).
        "recommend from a saved embedding": lambda: _wall(
            [cli, "recommend", "--dataset", str(ZOO_EMBEDDING), "--hub", "examples/zoo", "--quiet"],
            env={**os.environ, "T2V_HUB_CACHE": str(ROOT / ".t2v_cache" / "startup")}),
    }
    out: dict[str, dict[str, float]] = {}
    for name, fn in runs.items():
        fn()  # warm-up
        times = [fn() for _ in range(args.reps)]
        out[name] = {"median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                     "max_s": round(max(times), 3)}
        print(f"{name:24s} {out[name]}", flush=True)
    # PYTHONDONTWRITEBYTECODE=1 (some sandboxes set it) recompiles t2v-hub's sources on every start:
    # recorded, because it adds ~0.5 s to the first batch that a user's installed package does not pay.
    env = {"PYTHONDONTWRITEBYTECODE": bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))}
    args.out.write_text(json.dumps({"reps": args.reps, "cpus": os.cpu_count(), "env": env, "runs": out}, indent=1)
                        + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
