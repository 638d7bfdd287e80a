"""`t2v-hub index`: store a hub's expert embeddings as one memory-mapped matrix.

One listing of the hub (models tagged `task2vec` and every --filter tag), each
embedding fetched and checked as `t2v-hub experts` does, then written as
safetensors shards of --shard-rows rows (float32, or bfloat16 to halve the size)
with the ids, tasks and card URLs, and every expert's distance to the trivial
task. `t2v-hub recommend --index DIR` then ranks from the mapped shards without
holding a second copy of the matrix. The folder is written elsewhere and renamed
into place: an interrupted build leaves no half index.
"""

from __future__ import annotations

import argparse

from ..constants import FISHER_METHODS
from ._common import add_format_arg, add_hub_args, emit_summary, hint, positive_int, probe_name


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:

    p = sub.add_parser("index", help="build a memory-mapped index of a hub's experts", description=__doc__)
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument("--filter", action="append", default=[], metavar="TAG", help="also require this tag (repeatable)")
    p.add_argument("--probe", type=probe_name, default=None, help="embedding space to index (default: the one most experts share)")
    p.add_argument("--method", default=None, choices=FISHER_METHODS,
                   help="Fisher method to index (default: the most common)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="storage type of the matrix")
    p.add_argument("--shard-rows", type=positive_int, default=8192, help="experts per shard file")
    p.add_argument("--trivial", default=None, help="trivial-task embedding file (default: the probe's, computed once)")
    p.add_argument("--force", action="store_true", help="replace an existing index folder")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_format_arg(p, what="the summary")
    add_hub_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..hub import get_hub, list_experts
    from ..selection.index import build_index
    from ..selection.index_write import check_destination
    from ..selection.recommend import choose_probe
    from ..selection.scoring import partition_experts

    check_destination(args.out, args.force)  # before reading every expert's card
    hub = get_hub(args.hub, endpoint=args.endpoint, token=args.token)
    experts, skipped = list_experts(hub, filter=args.filter or None, progress=not args.quiet)
    for repo_id, why in skipped:
        hint(f"skipped {repo_id}: {why}")
    plan = choose_probe(experts, args.probe, args.method)
    chosen = [
        ex for ex in experts
        if ex.embedding.probe == plan.probe and (ex.embedding.method or "montecarlo") == plan.method
    ]
    # One embedding space per index: the first expert's (input size, norm setting) of that probe.
    same, other = partition_experts(chosen[0].embedding, chosen)
    if other:
        hint(f"{len(other)} expert(s) of {plan.probe} ({plan.method}) in another embedding space left out: "
             + ", ".join(repo_id for repo_id, _ in other[:5]))
    left = len(experts) - len(chosen)
    if left:
        hint(f"{left} expert(s) of other probes/methods left out (index them with --probe/--method)")
    from ..embedding import Task2VecEmbedding

    trivial = Task2VecEmbedding.load(args.trivial) if args.trivial else None
    out = build_index(same, args.out, dtype=args.dtype, shard_rows=args.shard_rows, trivial=trivial,
                      overwrite=args.force)
    from safetensors import safe_open

    with safe_open(str(out / "trivial.safetensors"), "pt") as f:  # what build_index stored, not recomputed
        priors = "prior_scale" in f.keys()  # noqa: SIM118 (safe_open has no iterator)
    summary = {"index": str(out), "experts": len(same), "probe": plan.probe, "method": plan.method,
               "dtype": args.dtype, "shards": -(-len(same) // args.shard_rows), "learned_priors": priors}
    emit_summary(args.format, summary, f"{out}: {summary['experts']} experts ({plan.probe}, {plan.method}), "
                                       f"{summary['shards']} shard(s), {args.dtype}"
                                       + (", with each expert's learned prior" if priors else ""))
    return 0
