"""`t2v-hub score`: rank candidate models for a dataset by the transferability of their features.

For a user who already has candidates: each model (a timm name, hf-hub:org/name,
local-dir:PATH) runs one forward pass over the dataset with its own preprocessing,
and its pre-logit features are scored (higher = better): logme (LogME evidence,
classification and regression), hscore (H-score) or knn (leave-one-out 5-NN
accuracy). One forward pass per model: use `t2v-hub recommend --rerank` to score
only TASK2VEC's shortlist of a whole hub.
"""

from __future__ import annotations

import argparse

from ._common import (
    add_data_args,
    add_format_arg,
    device_name,
    emit,
    float_in,
    hint,
    positive_int,
    print_json,
    seed_int,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("score", help="score candidate models on a dataset (LogME, H-score, kNN)",
                       description=__doc__)
    add_data_args(p)
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="timm names, hf-hub:org/name or local-dir:PATH of the candidates")
    # The names of selection.transferability.SCORES, spelled out: importing it would import torch.
    p.add_argument("--metric", choices=("logme", "hscore", "knn"), default="logme",
                   help="transferability score (default %(default)s)")
    p.add_argument("--max-samples", type=positive_int, default=None, help="use at most N samples (shuffled first)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the sample selection")
    p.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass")
    p.add_argument("--device", type=device_name, default=None, help="torch device (default: cpu)")
    p.add_argument("--max-model-mb", type=float_in(0.0, 1e9, lo_open=True), default=None, help="refuse models with more MB of weights")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_format_arg(p, what="the scores")
    return p


def run(args: argparse.Namespace) -> int:
    from ..selection.features import score_models
    from ._common import data_options

    def progress(name: str, i: int, n: int) -> None:
        if not args.quiet:
            hint(f"[{i + 1}/{n}] {name}: features of the dataset...")

    rows = score_models(
        args.dataset, args.models, metric=args.metric, max_samples=args.max_samples, seed=args.seed,
        batch_size=args.batch_size, device=args.device, max_model_mb=args.max_model_mb, on_model=progress,
        quiet=args.quiet, **{k: v for k, v in data_options(args).items() if v not in (None, False)},
    )
    if args.format == "json":
        print_json({"metric": args.metric, "higher_is_better": True, "scores": [r.to_dict() for r in rows],
                    "forward_passes": sum(r.forward_passes for r in rows),
                    "seconds": round(sum(r.seconds for r in rows), 3)})
        return 0
    emit(args.format, ("rank", "model", args.metric, "seconds", "images", "input", "dim"),
         [(r.rank, r.name, f"{r.score:.4f}", f"{r.seconds:.1f}", r.forward_passes, "x".join(map(str, r.input_size[1:])),
           r.feature_dim) for r in rows])
    if not args.quiet and args.format == "table":
        hint(f"higher {args.metric} = better; {sum(r.forward_passes for r in rows)} images through "
             f"{len(rows)} model(s) in {sum(r.seconds for r in rows):.1f}s")
    return 0
