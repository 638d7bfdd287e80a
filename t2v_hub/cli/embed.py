"""`t2v-hub embed`: compute a dataset's TASK2VEC embedding and write it as safetensors."""

from __future__ import annotations

import argparse

from ..constants import DEFAULT_PROBE
from ._common import (
    add_data_args,
    add_format_arg,
    add_probe_args,
    check_writable,
    embed_from_args,
    emit_summary,
    hint,
)

_KIND_WORDS = {"regression": "outputs (regression)", "segmentation": "classes per pixel",
               "dense_regression": "outputs per pixel (regression)"}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("embed", help="embed a dataset as a task", description=__doc__)
    add_data_args(p)
    add_probe_args(p, DEFAULT_PROBE)
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_format_arg(p, what="the summary")
    return p


def _skipped(n: int) -> str:
    # A cached run decodes nothing, so the library's skip warning does not repeat: the count still shows.
    return f" ({n} bad image{'s' if n != 1 else ''} skipped)" if n else ""


def run(args: argparse.Namespace) -> int:
    check_writable(args.out)
    quiet = args.quiet or args.format == "json"
    stats: dict = {}
    from ..distributed import dist_info

    info = dist_info()
    emb = embed_from_args(args, quiet=args.quiet or not info.is_main, stats=stats)
    if not info.is_main:  # under `accelerate launch` only the main process writes
        return 0
    emb.save(args.out)
    m = emb.metadata
    summary = {
        "out": args.out,
        "dataset": m.get("dataset_id"),
        "split": m.get("split"),
        "num_samples": int(m.get("num_samples", 0)),
        "num_bad_images": int(m.get("num_bad_images", 0) or 0),
        "num_classes": int(m.get("num_classes", 0)),
        "label_kind": m.get("label_kind", "single"),
        "probe": emb.probe,
        "method": emb.method,
        "dim": emb.dim,
        "norm": emb.norm,
        "seconds": round(float(stats.get("seconds", 0.0)), 3),
        "cached": bool(stats.get("cached", False)),
    }
    emit_summary(args.format, summary, (
        f"{summary['dataset']} [{summary['split']}]: {summary['num_samples']} samples"
        f"{_skipped(summary['num_bad_images'])}, "
        f"{summary['num_classes']} {_KIND_WORDS.get(summary['label_kind'], 'classes')}, "
        f"probe {emb.probe}, {emb.method}, dim {emb.dim}, "
        f"{summary['seconds']:.1f}s{' (cached)' if summary['cached'] else ''} -> {args.out}"
    ))
    if not quiet:
        hint("next: t2v-hub distance A.safetensors B.safetensors, or t2v-hub recommend --dataset ...")
    return 0
