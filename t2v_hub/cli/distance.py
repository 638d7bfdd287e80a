"""`t2v-hub distance`: TASK2VEC distance between embeddings.

With two files prints one number; with more prints the matrix (CSV or JSON).
``--asymmetric`` computes d_asym(first -> second): the first file is the source
(expert) task, the second the target task.
"""

from __future__ import annotations

import argparse
import sys

from ..constants import ASYM_ALPHA
from ..embedding import Task2VecEmbedding
from ._common import print_json


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("distance", help="distance between task embeddings", description=__doc__)
    p.add_argument("embeddings", nargs="+", help="two or more .safetensors embeddings")
    p.add_argument("--asymmetric", action="store_true", help="d_asym(source -> target) instead of d_sym")
    p.add_argument("--alpha", type=float, default=ASYM_ALPHA, help="weight of the trivial-task term (default %(default)s)")
    p.add_argument("--format", choices=("text", "csv", "json"), default="text")
    return p


def run(args: argparse.Namespace) -> int:
    from ..distances import cdist, cdist_asym
    from ..errors import T2VError

    if len(args.embeddings) < 2:
        raise T2VError("distance needs at least two embedding files")
    embs = [Task2VecEmbedding.load(p) for p in args.embeddings]
    for e in embs[1:]:
        embs[0].check_compatible(e)
    if args.asymmetric:
        from ..task2vec import trivial_for

        t0 = trivial_for(embs[0])
        D = cdist_asym(embs, embs, t0, alpha=args.alpha)
    else:
        D = cdist(embs, embs)
    if len(embs) == 2 and args.format == "text":
        print(f"{float(D[0, 1]):.6f}")
        return 0
    names = args.embeddings
    if args.format == "json":
        print_json({"names": names, "asymmetric": args.asymmetric, "alpha": args.alpha, "matrix": D.tolist()})
    else:
        w = sys.stdout
        w.write("," + ",".join(names) + "\n")
        for name, row in zip(names, D.tolist(), strict=True):
            w.write(name + "," + ",".join(f"{v:.6f}" for v in row) + "\n")
    return 0
