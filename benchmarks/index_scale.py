"""Ranking from a memory-mapped expert index (``t2v-hub index`` / ``recommend --index``) at scale.

    python -m benchmarks.index_scale                        # 100k experts, bfloat16 and float32
    python -m benchmarks.index_scale --sizes 10000 --dtypes bfloat16

The same synthetic experts as ``benchmarks.rank_scale`` (21,008 filters), written as
an index of 8,192-row safetensors shards, then, in a fresh subprocess: open the index
(maps the shards, reads nothing), rank one target by d_asym (:func:`rank_index`,
top-10) once cold (pages come from the page cache or disk) and ``repeats`` times
warm. Reported: open time, cold and warm rank times, and memory: the process's
anonymous (private) RSS growth, which is what ranking costs beyond the mapped
files, and the file-backed RSS, which the OS can drop and re-read at will.
Writes ``benchmarks/results/index_scale.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.rank_scale import DIM, RESULTS, _cpu_name, _loadavg, _profile, make_rows

SHARD_ROWS = 8192


def _rss_parts_mb() -> tuple[float, float]:
    """(anonymous, file-backed) resident memory of this process, from /proc/self/status."""
    anon = file = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            anon = int(line.split()[1]) / 1024
        elif line.startswith("RssFile:"):
            file = int(line.split()[1]) / 1024
    return anon, file


def build(n: int, dtype: str, out: Path) -> float:
    from t2v_hub.selection.index import write_index

    prof = _profile()
    space = {"probe": "synthetic", "weights_sha256": "0", "layout_hash": "0", "dim": str(DIM), "method": "montecarlo"}

    def blocks():
        for start in range(0, n, SHARD_ROWS):
            yield torch.cat([make_rows(i, min(n, i + 64), prof) for i in range(start, min(n, start + SHARD_ROWS), 64)])

    t0 = time.perf_counter()
    ids = [f"synthetic/expert-{i}" for i in range(n)]
    write_index(out, space, ids, [""] * n, [""] * n, blocks(), prof.exp(), dtype=dtype, overwrite=True)
    return time.perf_counter() - t0


def child(path: str, repeats: int) -> dict[str, Any]:
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.selection.index import load_index, rank_index

    torch.set_num_threads(1)
    prof = _profile()
    target = Task2VecEmbedding.create(make_rows(10**9, 10**9 + 1, prof)[0], probe="synthetic", weights_sha256="0",
                                      layout_hash="0", method="montecarlo")
    # Warm the kernels on a tiny matrix first, so the baseline holds numba/torch's own memory.
    from t2v_hub.selection.kernels.ranking import sym_to_target

    sym_to_target(make_rows(0, 4, prof), target.vector)
    anon0, _ = _rss_parts_mb()
    t0 = time.perf_counter()
    index = load_index(path)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    rank_index(target, index, top_k=10)
    t_cold = time.perf_counter() - t0
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        recs = rank_index(target, index, top_k=10)
        walls.append(time.perf_counter() - t0)
    anon1, file1 = _rss_parts_mb()
    matrix_mb = sum(s.numel() * s.element_size() for s in index.shards) / 2**20
    return {"n": index.size, "open_s": round(t_open, 3), "rank_cold_s": round(t_cold, 3),
            "rank_warm_s_median": round(statistics.median(walls), 3), "rank_warm_s_best": round(min(walls), 3),
            "matrix_mb": round(matrix_mb, 1), "anon_rss_growth_mb": round(anon1 - anon0, 1),
            "file_rss_mb": round(file1, 1), "top1": recs[0].repo_id}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float32"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--dir", default=None, help="where to write the indexes (default: a temporary folder)")
    ap.add_argument("--out", default=str(RESULTS / "index_scale"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.repeats)))
        return 0
    runs = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for n in args.sizes:
            for dt in args.dtypes:
                path = Path(tmp) / f"idx-{n}-{dt}"
                t_build = build(n, dt, path)
                la0 = _loadavg()
                proc = subprocess.run([sys.executable, "-m", "benchmarks.index_scale", "--child", str(path),
                                       "--repeats", str(args.repeats)], capture_output=True, text=True,
                                      cwd=Path(__file__).resolve().parent.parent)
                if proc.returncode != 0:
                    print(proc.stderr[-2000:], file=sys.stderr)
                    runs.append({"n": n, "dtype": dt, "failed": proc.stderr[-300:]})
                    continue
                r = {"dtype": dt, "build_s": round(t_build, 1), **json.loads(proc.stdout.strip().splitlines()[-1]),
                     "loadavg": f"{la0}-{_loadavg()}"}
                print(json.dumps(r), file=sys.stderr)
                runs.append(r)
                import shutil

                shutil.rmtree(path)
    meta = {"dim": DIM, "cpus": os.cpu_count(), "processor": _cpu_name(), "torch": torch.__version__,
            "shard_rows": SHARD_ROWS, "threads": 1}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    lines = ["# Ranking from a memory-mapped expert index", "",
             f"Synthetic experts of {DIM:,} filters in {SHARD_ROWS:,}-row shards; one thread; {meta['processor']}. "
             "Anonymous RSS growth = memory ranking needs beyond the mapped files; file RSS = mapped pages resident "
             "(reclaimable by the OS).", "",
             "| n | storage | build s | open s | rank cold s | rank warm s (median) | matrix MB | anon RSS growth MB "
             "| file RSS MB | load avg |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in runs:
        if "failed" in r:
            lines.append(f"| {r['n']:,} | {r['dtype']} | failed ||||||||")
            continue
        lines.append(f"| {r['n']:,} | {r['dtype']} | {r['build_s']} | {r['open_s']} | {r['rank_cold_s']} | "
                     f"{r['rank_warm_s_median']} | {r['matrix_mb']:,.0f} | {r['anon_rss_growth_mb']:,.1f} | "
                     f"{r['file_rss_mb']:,.0f} | {r['loadavg']} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
