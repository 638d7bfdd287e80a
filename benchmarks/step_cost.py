"""What the exact `montecarlo` Fisher pass costs against a plain training step, and where it goes.

    python -m benchmarks.step_cost            # writes benchmarks/results/step_cost.{json,md}

For each probe, input size and thread count: seconds per batch of a plain training step
(forward, mean cross-entropy, ``loss.backward()`` into the weights, no optimizer) and of one
``montecarlo`` pass over the same batch (one label draw: forward, one backward that computes
activation gradients only, and the per-sample squared gradients of every measured layer),
fp32 on the CPU, the median of ``--reps`` timed batches after one warm-up. The Fisher pass is
split by timing each measured layer's per-sample square computation, grouped by layer kind
(dense conv, depthwise conv, 1x1 conv, linear); the rest is forward + backward.
Random-init weights (timm creates them offline), random images and labels: the costs do
not depend on the weights' values. The issue's target: at most 1.5x the training step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CASES = (("tf_efficientnet_lite0", 32), ("tf_efficientnet_lite0", 64), ("tf_efficientnet_lite0", 224),
         ("resnet18", 64), ("resnet34", 224), ("vit_tiny_patch16_224", 224))


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d | nn.Conv1d):
        if module.groups > 1 and module.groups == module.in_channels:
            return "depthwise conv"
        if all(k == 1 for k in module.kernel_size):
            return "1x1 conv"
        return "dense conv"
    return type(module).__name__


def measure(name: str, size: int, threads: int, batch: int, reps: int) -> dict[str, Any]:
    import timm

    from t2v_hub.fisher import _tap as T
    from t2v_hub.fisher import estimate
    from t2v_hub.probes.layout import filter_parameter_names

    torch.set_num_threads(threads)
    kw = {"img_size": size} if name.startswith("vit") else {}
    model = timm.create_model(name, num_classes=10, **kw).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    names = filter_parameter_names(model)

    def train_step() -> float:
        t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        return time.perf_counter() - t

    by_kind: dict[str, float] = defaultdict(float)
    orig = T.Tap._sq_sum

    def timed(self: Any, a: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        t = time.perf_counter()
        out = orig(self, a, grad)
        by_kind[_kind(self.module)] += time.perf_counter() - t
        return out

    orig_filter = T.conv_filter_sq_sum

    def timed_filter(spec: Any, *args: Any, **kwargs: Any) -> torch.Tensor:  # the per-filter (Gram) path
        t = time.perf_counter()
        out = orig_filter(spec, *args, **kwargs)
        by_kind["1x1 conv" if all(k == 1 for k in spec.kernel) else "dense conv"] += time.perf_counter() - t
        return out

    def fisher_pass() -> float:  # as `embed` runs it: per-filter sums where cheaper
        t = time.perf_counter()
        estimate(model, [(x, y)], "montecarlo", params=names, generator=torch.Generator().manual_seed(1),
                 filter_means=True)
        return time.perf_counter() - t

    train_step()
    steps = [train_step() for _ in range(reps)]
    for p in model.parameters():
        p.grad = None
    T.Tap._sq_sum = timed
    T.conv_filter_sq_sum = timed_filter
    try:
        fisher_pass()
        by_kind.clear()
        passes = [fisher_pass() for _ in range(reps)]
    finally:
        T.Tap._sq_sum = orig
        T.conv_filter_sq_sum = orig_filter
    step_s, fisher_s = statistics.median(steps), statistics.median(passes)
    kinds = {k: round(v / reps, 4) for k, v in sorted(by_kind.items())}
    return {"probe": name, "size": size, "threads": threads, "batch": batch, "train_step_s": round(step_s, 4),
            "fisher_s": round(fisher_s, 4), "ratio": round(fisher_s / step_s, 2),
            "squares_s_by_kind": kinds, "forward_backward_s": round(fisher_s - sum(kinds.values()), 4)}


def render(rows: list[dict[str, Any]]) -> str:
    kinds = sorted({k for r in rows for k in r["squares_s_by_kind"]})
    head = "| probe | px | threads | train step s | montecarlo s | ratio | fwd+bwd s | " + " | ".join(
        f"{k} s" for k in kinds) + " |"
    lines = [head, "|" + "---|" * 3 + "---:|" * (4 + len(kinds))]
    for r in rows:
        lines.append(f"| {r['probe']} | {r['size']} | {r['threads']} | {r['train_step_s']:.3f} | {r['fisher_s']:.3f} | "
                     f"{r['ratio']:.2f}x | {r['forward_backward_s']:.3f} | "
                     + " | ".join(f"{r['squares_s_by_kind'].get(k, 0.0):.3f}" for k in kinds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=RESULTS / "step_cost.json")
    args = ap.parse_args(argv)
    rows = []
    for name, size in CASES:
        for threads in args.threads:
            rows.append(measure(name, size, threads, args.batch, args.reps))
            print(json.dumps(rows[-1]), flush=True)
    args.out.write_text(json.dumps({"batch": args.batch, "reps": args.reps, "rows": rows}, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(rows))
    print(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
