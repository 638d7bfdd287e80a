"""`t2v-hub trivial`: write the trivial embedding t0 (the probe's Fisher for a task with no information).

d_asym subtracts an expert's distance to t0. It is computed once per probe,
weights, layout and method, and cached; this command writes one explicitly, either
in the space of an existing embedding (--like FILE: the same probe, the very weights
it records, input size and method; offline for random-init probes) or for a probe
given by name.
"""

from __future__ import annotations

import argparse

from ._common import (
    add_format_arg,
    check_writable,
    emit_summary,
    given_flags,
    hint,
    input_side,
    int_in,
    pretrained_flag,
    probe_name,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("trivial", help="write the trivial embedding t0 used by d_asym", description=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--like", metavar="FILE", help="an embedding whose space t0 must share")
    src.add_argument("--probe", type=probe_name, help="timm model name of the probe")
    p.add_argument("--method", default=None, choices=("montecarlo", "empirical", "batch", "variational"),
                   help="Fisher estimator (with --probe; default montecarlo)")
    p.add_argument("--input-size", type=input_side, default=None, help="probe input resolution (with --probe)")
    p.add_argument("--include-norm", action="store_true", help="norm-layer scales in the layout (with --probe)")
    p.add_argument("--no-pretrained", action="store_true", help="random-init probe (with --probe)")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="the probe's weights file (with --probe)")
    p.add_argument("--num-samples", type=int_in(2, 2**31 - 1), default=64, help="images of the no-information task")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--quiet", action="store_true", help="no progress or hints on stderr")
    add_format_arg(p, what="the summary")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import T2VError

    check_writable(args.out, example="t0.safetensors")
    if args.like:
        from ..embedding import Task2VecEmbedding
        from ..trivial import trivial_for

        given = given_flags(args, ("method", "input_size", "include_norm", "no_pretrained", "checkpoint"))
        if given:
            one = len(given) == 1
            raise T2VError(f"{', '.join(given)} {'applies' if one else 'apply'} to --probe; --like takes the probe, "
                           f"method, input size and weights from the embedding: drop {'it' if one else 'them'}")
        t0 = trivial_for(Task2VecEmbedding.load(args.like), num_samples=args.num_samples, quiet=args.quiet)
    else:
        from ..trivial import trivial_embedding

        t0 = trivial_embedding(args.probe, args.method or "montecarlo", num_samples=args.num_samples,
                               input_size=args.input_size, include_norm=args.include_norm,
                               pretrained=pretrained_flag(args), checkpoint=args.checkpoint,
                               quiet=args.quiet)
    t0.save(args.out)
    summary = {"out": args.out, "probe": t0.probe, "method": t0.method, "dim": t0.dim, "norm": t0.norm,
               "weights": t0.metadata.get("weights"), "weights_sha256": t0.metadata.get("weights_sha256")}
    emit_summary(args.format, summary, f"trivial embedding of {t0.probe} ({t0.method}, {summary['weights']}), "
                                       f"dim {t0.dim}, norm {t0.norm:.4g} -> {args.out}")
    if args.format == "table" and not args.quiet:
        hint("use it with: t2v-hub distance A B --asymmetric, or recommend/matrix --trivial " + args.out)
    return 0
