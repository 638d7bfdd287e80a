"""`t2v-hub recommend`: rank the hub's experts for a dataset.

Embeds the dataset with the probe the experts share (unless --probe/--method say
otherwise; cached), lists every expert in one listing, and ranks them by
d_asym(expert -> task) or by a trained MODEL2VEC selector (--selector). Works
offline against a local hub folder (--hub PATH). --dataset may also be an
embedding file (.safetensors) computed earlier.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..constants import ASYM_ALPHA
from ._common import add_data_args, add_probe_args, hint, print_json


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("recommend", help="rank hub experts for a dataset", description=__doc__)
    add_data_args(p)
    add_probe_args(p, default_probe=None)
    # None = "not given": the experts' probe, method, input size and norm setting are used.
    p.set_defaults(method=None, include_norm=None)
    g = p.add_argument_group("ranking")
    g.add_argument("--hub", default="hf", help="hf, a Hub-compatible URL, or a local hub folder (default: hf)")
    g.add_argument("--index", default=None, metavar="DIR",
                   help="rank from an expert index built by `t2v-hub index` (memory-mapped; for large hubs)")
    g.add_argument("--top-k", type=int, default=5, help="how many experts to show (default %(default)s)")
    g.add_argument("--selector", default=None, help="MODEL2VEC selector: a file, or a hub repo holding selector.safetensors")
    g.add_argument("--filter", action="extend", nargs="+", default=[], metavar="TAG", help="only experts with these tags")
    g.add_argument("--alpha", type=float, default=None,
                   help=f"trivial-task weight of d_asym (default: the selector's, else {ASYM_ALPHA})")
    g.add_argument("--trivial", default=None, help="trivial-task embedding file (default: the probe's, computed once)")
    g.add_argument("--format", choices=("table", "json"), default="table")
    g.add_argument("--explain", action="store_true", help="show distance to the task, to the trivial task, and the bias")
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _target(args: argparse.Namespace, experts: list[Any] | None, plan: Any = None) -> Any:
    from ..embedding import Task2VecEmbedding
    from ..recommend import choose_probe, embed_target
    from ._common import data_options

    path = Path(args.dataset)
    if path.suffix == ".safetensors" and path.is_file():
        return Task2VecEmbedding.load(path)
    plan = plan or choose_probe(experts or [], args.probe, args.method)
    if not args.quiet:
        hint(f"embedding {args.dataset} with {plan.probe} ({plan.method}), shared by {plan.count} expert(s)...")
    options = {k: v for k, v in data_options(args).items() if v not in (None, False)}
    return embed_target(
        args.dataset, plan,
        input_size=args.input_size, include_norm=args.include_norm, max_samples=args.max_samples, seed=args.seed,
        mc_samples=args.mc_samples, batch_size=args.batch_size, pretrained=False if args.no_pretrained else None,
        device=args.device, cache=not args.no_cache, quiet=args.quiet, **options,
    )


def _report_skipped(skipped: list[tuple[str, str]], what: str) -> None:
    if not skipped:
        return
    hint(f"{len(skipped)} expert(s) {what}:")
    for repo_id, reason in skipped:
        hint(f"  {repo_id}: {reason}")


def run(args: argparse.Namespace) -> int:
    from ..embedding import Task2VecEmbedding
    from ..errors import RecommendError
    from ..hub import get_hub, list_experts
    from ..recommend import partition_experts, rank_experts, timm_name
    from ..selector import load_selector

    if args.top_k < 1:
        raise RecommendError(f"--top-k must be at least 1, got {args.top_k}")
    if args.index:
        return _run_index(args)
    hub = get_hub(args.hub)
    experts, skipped = list_experts(hub, filter=args.filter or None)
    _report_skipped(skipped, "skipped (missing or unusable embedding)")
    if not experts:
        tags = ", ".join(["task2vec", *args.filter])
        raise RecommendError(f"no experts found on {hub.description} with tags {tags}; "
                             "attach embeddings with `t2v-hub attach` or change --filter")
    target = _target(args, experts)
    compatible, incompatible = partition_experts(target, experts)
    if compatible:
        _report_skipped(incompatible, "left out (embedded with another probe/method)")
    selector = load_selector(args.selector, hub) if args.selector else None
    trivial = Task2VecEmbedding.load(args.trivial) if args.trivial else None
    notes: list[str] = []
    recs = rank_experts(target, experts, alpha=args.alpha, selector=selector, trivial=trivial, top_k=args.top_k,
                        name_for=lambda r: timm_name(r, hub), notes=notes)
    for n in notes:
        hint(f"note: {n}")
    if args.format == "json":
        print_json({
            "target": {k: target.metadata.get(k) for k in ("dataset_id", "probe", "method", "num_samples")},
            "hub": args.hub, "selector": args.selector, "num_ranked": len(compatible),
            "skipped": [{"repo_id": r, "reason": why} for r, why in skipped + incompatible],
            "notes": notes, "recommendations": [r.to_dict() for r in recs],
        })
        return 0
    _print_table(recs, selector is not None, args.explain)
    return 0


def _run_index(args: argparse.Namespace) -> int:
    from ..embedding import Task2VecEmbedding
    from ..errors import RecommendError
    from ..expert_index import load_index, rank_index
    from ..hub import get_hub
    from ..selector import load_selector

    index = load_index(args.index)
    plan = index.plan()
    if (args.probe and args.probe != plan.probe) or (args.method and args.method != plan.method):
        raise RecommendError(f"the index holds {plan.probe} ({plan.method}) embeddings; drop --probe/--method "
                             "or build an index for the ones you want")
    if not args.quiet:
        hint(f"embedding {args.dataset} with {plan.probe} ({plan.method}) for {index.size} indexed expert(s)...")
    target = _target(args, None, plan)
    selector = load_selector(args.selector, get_hub(args.hub)) if args.selector else None
    trivial = Task2VecEmbedding.load(args.trivial) if args.trivial else None
    notes: list[str] = []
    recs = rank_index(target, index, alpha=args.alpha, selector=selector, trivial=trivial, top_k=args.top_k,
                      notes=notes)
    for n in notes:
        hint(f"note: {n}")
    if args.format == "json":
        print_json({
            "target": {k: target.metadata.get(k) for k in ("dataset_id", "probe", "method", "num_samples")},
            "index": args.index, "selector": args.selector, "num_ranked": index.size, "skipped": [],
            "notes": notes, "recommendations": [r.to_dict() for r in recs],
        })
    else:
        _print_table(recs, selector is not None, args.explain)
    index.close()
    return 0


def _print_table(recs: list[Any], with_prob: bool, explain: bool) -> None:
    head = ["rank", "model", "d_asym", "score"] + (["prob"] if with_prob else [])
    if explain:
        head += ["d_task", "d_trivial", "bias"]
    head += ["trained on", "card"]
    rows = []
    for r in recs:
        row = [str(r.rank), r.repo_id, f"{r.distance:.4f}", f"{r.score:.4f}"]
        if with_prob:
            row.append(f"{r.probability:.3f}")
        if explain:
            row += [f"{r.explain['d_sym_to_task']:.4f}", f"{r.explain['d_sym_to_trivial']:.4f}",
                    f"{r.explain['bias']:+.4f}"]
        row += [r.task or "-", r.url]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    out = sys.stdout
    out.write("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip() + "\n")
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
