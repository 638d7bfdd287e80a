"""Which timm model families embed with the exact per-sample estimator: one model per timm model module.

    python -m benchmarks.probe_coverage [--timeout 120] [--only resnet,swin_transformer]

For every module of ``timm.models`` that registers models, the smallest-sounding
variant (test_/atto/femto/pico/nano/tiny/... first) is built with random weights,
at 64 px (56 px for 14-pixel patches; the model's default size if neither runs), and embedded
with ``montecarlo`` on 8 random images (2 classes), each in its own subprocess with
a time limit. The table (family, model, dim, seconds, status, the one-line error)
goes to ``benchmarks/results/probe_coverage.{json,md}``. Families that fail must fail
with one line naming the layer and the fallback (``method='batch'``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SIZE_WORDS = ("test_", "atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "s_", "_s", "b0",
              "18", "lite0", "050", "100")

CHILD = r"""
import json, sys, time, warnings
import timm, torch
from t2v_hub.errors import T2VError
from t2v_hub.task2vec import TensorTask, embed
warnings.simplefilter("ignore")
torch.set_num_threads(1)
torch.manual_seed(0)  # random init: some models' features saturate the head on some draws (visformer)
name = sys.argv[1]
t = time.perf_counter()

def build(size):
    try:
        return timm.create_model(name, pretrained=False, img_size=size)
    except Exception:  # no img_size: a CNN runs at any size, anything else at its default
        return timm.create_model(name, pretrained=False)

def run(model, size):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, size, size, generator=g), torch.arange(8) % 2
    return embed(TensorTask(x, y), model, "montecarlo", input_size=size, batch_size=4)

try:
    e = None
    # 64 px, else 56 (a multiple of 14-, 8- and 7-pixel patches), else the model's default size.
    for size in (64, 56, None):
        model = build(size) if size else timm.create_model(name, pretrained=False)
        size = size or int(timm.data.resolve_model_data_config(model)["input_size"][-1])
        try:
            e = run(model, size)
            break
        except T2VError:
            raise  # the library's own verdict, not a size the model cannot take
        except Exception:
            if size not in (64, 56):
                raise
    print(json.dumps({"status": "ok", "dim": e.dim, "input": size, "seconds": round(time.perf_counter() - t, 1)}))
except Exception as exc:
    msg = " ".join(str(exc).split())[:240]
    print(json.dumps({"status": "fail", "error": f"{type(exc).__name__}: {msg}",
                      "seconds": round(time.perf_counter() - t, 1)}))
"""


def families() -> dict[str, str]:
    import timm

    out: dict[str, str] = {}
    for module in sorted(timm.list_modules()):
        names = timm.list_models(module=module)
        if not names:
            continue

        def rank(n: str) -> tuple[int, int, str]:
            hits = [i for i, w in enumerate(SIZE_WORDS) if w in n]
            return (min(hits) if hits else len(SIZE_WORDS), len(n), n)

        out[module] = min(names, key=rank)
    return out


def run(timeout: float, only: list[str] | None) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    fams = families()
    for module, name in fams.items():
        if only and module not in only:
            continue
        t = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD, name], capture_output=True, text=True,
                                  timeout=timeout)
            line = (proc.stdout.strip().splitlines() or ["{}"])[-1]
            row = json.loads(line) if line.startswith("{") else {"status": "crash", "error": proc.stderr[-240:]}
        except subprocess.TimeoutExpired:
            row = {"status": "timeout", "seconds": round(time.perf_counter() - t, 1)}
        rows[module] = {"model": name, **row}
        print(f"{module:28s} {name:40s} {row['status']:8s} {row.get('seconds', '-')}", flush=True)
    return rows


def write(rows: dict[str, dict]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "probe_coverage.json").write_text(json.dumps(rows, indent=1) + "\n")
    ok = sum(r["status"] == "ok" for r in rows.values())
    lines = [f"# Probe coverage: {ok}/{len(rows)} timm model modules embed with montecarlo", "",
             "| family (timm module) | model | status | dim | input | seconds | error |", "|---|---|---|---|---|---|---|"]
    for fam, r in rows.items():
        lines.append(f"| {fam} | {r['model']} | {r['status']} | {r.get('dim', '')} | {r.get('input', '')} | "
                     f"{r.get('seconds', '')} | {r.get('error', '').replace('|', '/')} |")
    (RESULTS / "probe_coverage.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--only", default=None, help="comma-separated timm module names")
    ap.add_argument("--rerun-failed", action="store_true", help="rerun only the families that did not embed")
    a = ap.parse_args()
    old = json.loads((RESULTS / "probe_coverage.json").read_text()) if (RESULTS / "probe_coverage.json").exists() else {}
    only = a.only.split(",") if a.only else None
    if a.rerun_failed:
        only = [f for f, r in old.items() if r.get("status") != "ok"]
    rows = run(a.timeout, only)
    write({**old, **rows} if only else rows)
