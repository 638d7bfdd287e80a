"""`t2v-hub distance`: TASK2VEC distance between embeddings.

With two files prints one number; with more prints the matrix (CSV or JSON).
``--asymmetric`` computes d_asym(first -> second): the first file is the source
(expert) task, the second the target task.
"""

from __future__ import annotations

import argparse

from ..constants import ASYM_ALPHA
from ._common import add_format_arg, emit, float_in, print_json


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("distance", help="distance between task embeddings", description=__doc__)
    p.add_argument("embeddings", nargs="+", help="two or more .safetensors embeddings")
    p.add_argument("--asymmetric", action="store_true", help="d_asym(source -> target) instead of d_sym")
    p.add_argument("--alpha", type=float_in(0.0, 1.0), default=None,
                   help=f"weight of the trivial-task term, with --asymmetric (default {ASYM_ALPHA})")
    add_format_arg(p, what="the distance (two files) or the matrix")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import T2VError
    from ..selection.distances import cdist, cdist_asym

    if len(args.embeddings) < 2:
        raise T2VError("distance needs at least two embedding files")
    if args.alpha is not None and not args.asymmetric:
        raise T2VError("--alpha weighs the trivial-task term of d_asym: add --asymmetric, or drop --alpha")
    if args.alpha is None:
        args.alpha = ASYM_ALPHA
    from ..embedding import Task2VecEmbedding

    embs = [Task2VecEmbedding.load(p) for p in args.embeddings]
    for e in embs[1:]:
        embs[0].check_compatible(e)
    if args.asymmetric:
        from ..trivial import trivial_for

        t0 = trivial_for(embs[0])
        D = cdist_asym(embs, embs, t0, alpha=args.alpha)
    else:
        D = cdist(embs, embs)
    if len(embs) == 2 and args.format == "table":
        print(f"{float(D[0, 1]):.6f}")
        return 0
    names = args.embeddings
    if args.format == "json":
        print_json({"names": names, "asymmetric": args.asymmetric, "alpha": args.alpha, "matrix": D.tolist()})
    else:
        emit(args.format, ["", *names], [[name, *(f"{v:.6f}" for v in row)] for name, row in zip(names, D.tolist(),
                                                                                                 strict=True)])
    return 0
