"""`t2v-hub recommend`: rank the hub's experts for a dataset.

Embeds the dataset with the probe the experts share (unless --probe/--method say
otherwise; cached), lists every expert in one listing, and ranks them by
d_asym(expert -> task) or by a trained MODEL2VEC selector (--selector). Works
offline against a local hub folder (--hub PATH). --dataset may also be an
embedding file (.safetensors) computed earlier.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..constants import ASYM_ALPHA, DEFAULT_GENERALISTS, DEFAULT_SHORTLIST, VARIATIONAL_ASYM_ALPHA
from ._common import (
    add_data_args,
    add_format_arg,
    add_hub_args,
    add_probe_args,
    emit,
    float_in,
    given_flags,
    head_from_args,
    hint,
    int_in,
    positive_int,
    pretrained_flag,
    print_json,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("recommend", help="rank hub experts for a dataset", description=__doc__)
    add_data_args(p)
    add_probe_args(p, default_probe=None)
    # None = "not given": the experts' probe, method, input size and norm setting are used.
    p.set_defaults(method=None, include_norm=None)
    g = p.add_argument_group("ranking")
    g.add_argument("--index", default=None, metavar="DIR",
                   help="rank from an expert index built by `t2v-hub index` (memory-mapped; for large hubs)")
    g.add_argument("--top-k", type=positive_int, default=5, help="how many experts to show (default %(default)s)")
    g.add_argument("--selector", default=None, help="MODEL2VEC selector: a file, or a hub repo holding selector.safetensors")
    g.add_argument("--filter", action="extend", nargs="+", default=[], metavar="TAG", help="only experts with these tags")
    g.add_argument("--alpha", type=float_in(0.0, 1.0), default=None,
                   help=f"trivial-task weight of d_asym (default: the selector's, else {ASYM_ALPHA}; "
                        f"{VARIATIONAL_ASYM_ALPHA} for --method variational experts). Measured on the zoo's 36 tasks "
                        "(leave-one-out, mixed, leave-one-domain-out): with montecarlo embeddings no one of four "
                        "definitions of the trivial task changes a first choice at any alpha, and a fifth (each "
                        "expert's own images with shuffled labels, not built in) changes choices but helps two "
                        "meta-tasks and hurts two at every alpha; with variational ones each expert's own learned "
                        "prior is its t0 and alpha 0.5 lowers the error increase on all three (BENCHMARKS.md)")
    g.add_argument("--trivial", default=None, help="trivial-task embedding file (default: the probe's, computed once)")
    r = p.add_argument_group("two-stage ranking")
    r.add_argument("--rerank", choices=("none", "logme", "hscore", "knn"), default="none",
                   help="stage 2: score the shortlist's own features on the dataset and reorder it "
                        "(one forward pass per shortlisted expert; default: none, TASK2VEC only)")
    r.add_argument("--shortlist", type=positive_int, default=None, metavar="K",
                   help=f"experts of the TASK2VEC ranking that stage 2 scores, with --rerank (default {DEFAULT_SHORTLIST})")
    r.add_argument("--generalists", type=int_in(0, 2**31 - 1), default=None, metavar="G",
                   help=f"stage 2 also scores the G experts of lowest mean relative error on the selector's "
                        "training tasks (without --selector: on the datasets the experts' own evaluation results "
                        "on the hub name, one read per expert) that TASK2VEC did not shortlist (default "
                        f"{DEFAULT_GENERALISTS} with a selector that records them, else 0). They find the experts that "
                        "transfer from other domains, which TASK2VEC ranks last on tasks about style rather than "
                        "content (BENCHMARKS.md)")
    r.add_argument("--max-model-mb", type=float_in(0.0, 1e9, lo_open=True), default=None,
                   help="stage 2 skips experts with more MB of weights (they keep their TASK2VEC place)")
    add_format_arg(g, what="the ranking")
    g.add_argument("--explain", action="store_true", help="show distance to the task, to the trivial task, and the bias")
    g.add_argument("--quiet", action="store_true", help="no progress on stderr")
    # None = not given ('hf'), so that --hub given beside --index can be refused.
    add_hub_args(p, hub_default=None)
    return p


def _dataset(args: argparse.Namespace) -> Any:
    from ..embedding import Task2VecEmbedding

    path = Path(args.dataset)
    if path.suffix == ".safetensors" and path.is_file():
        from ._common import refuse_compute_flags

        refuse_compute_flags(args, f"--dataset {args.dataset}")
        return Task2VecEmbedding.load(path)
    return args.dataset


def _report_skipped(skipped: list[tuple[str, str]], what: str) -> None:
    if not skipped:
        return
    hint(f"{len(skipped)} expert(s) {what}:")
    for repo_id, reason in skipped:
        hint(f"  {repo_id}: {reason}")


def run(args: argparse.Namespace) -> int:
    from ..embedding import Task2VecEmbedding
    from ..errors import RecommendError
    from ..hub import get_hub
    from ..selection.recommend import recommend
    from ._common import data_options

    if args.rerank == "none":
        extra = given_flags(args, ("shortlist", "generalists", "max_model_mb"))
        if extra:
            raise RecommendError(f"{extra[0]} sets stage 2: add --rerank logme (or hscore, knn), or drop {extra[0]}")
    if args.shortlist is None:
        args.shortlist = DEFAULT_SHORTLIST
    if args.index and args.filter:
        raise RecommendError("--filter selects a hub's experts by tag, and an index holds the experts it was built "
                             "with: build the index with `t2v-hub index --filter ...`, or drop --filter")
    if args.index and args.hub is not None:
        raise RecommendError("--index and --hub are alternatives: the index already holds the experts; pass one")
    hub = get_hub(args.hub or "hf", endpoint=args.endpoint, token=args.token)

    def on_embed(plan: Any) -> None:
        if not args.quiet:
            hint(f"embedding {args.dataset} with {plan.probe} ({plan.method}), shared by {plan.count} expert(s)...")

    def on_rerank(rec: Any, i: int, n: int) -> None:
        if not args.quiet:
            hint(f"stage 2 [{i + 1}/{n}]: {args.rerank} of {rec.name}...")

    options = {k: v for k, v in data_options(args).items() if v not in (None, False)}
    result = recommend(
        _dataset(args), hub=hub, index=args.index, top_k=args.top_k, probe=args.probe, method=args.method,
        alpha=args.alpha, selector=args.selector, filter=args.filter or None, on_embed=on_embed,
        trivial=Task2VecEmbedding.load(args.trivial) if args.trivial else None,
        input_size=args.input_size, include_norm=args.include_norm, max_samples=args.max_samples, seed=args.seed,
        mc_samples=args.mc_samples or 1, batch_size=args.batch_size, head=head_from_args(args), pretrained=pretrained_flag(args),
        checkpoint=args.checkpoint,
        device=args.device, cache=not args.no_cache, quiet=args.quiet, rerank=args.rerank,
        shortlist=args.shortlist, max_model_mb=args.max_model_mb, on_rerank=on_rerank, generalists=args.generalists,
        **options,
    )
    _report_skipped(result.skipped, "skipped (missing or unusable embedding)")
    _report_skipped(result.incompatible, "left out (embedded with another probe/method)")
    for n in result.notes:
        hint(f"note: {n}")
    recs, target = result.recommendations, result.target
    if args.format == "json":
        print_json({
            "target": {"dataset_id": target.metadata.get("dataset_id"), "probe": target.probe,
                       "method": target.method, "num_samples": int(target.metadata.get("num_samples") or 0)},
            "order": "ascending score: lower d_asym (+ learned bias) = better; stage 2 scores: higher = better",
            "hub": None if args.index else (args.hub or "hf"), "index": args.index, "selector": args.selector,
            "num_ranked": result.num_ranked,
            "skipped": [{"repo_id": r, "reason": why} for r, why in result.skipped + result.incompatible],
            "notes": result.notes, "cost": result.cost, "recommendations": [r.to_dict() for r in recs],
        })
        return 0
    _print_table(recs, args.selector is not None, args.explain, args.format, args.rerank)
    if args.format == "table" and not args.quiet:
        hint("lower d_asym = closer to the task = better (score adds the selector's bias"
             + (f"; {args.rerank}: higher = better" if args.rerank != "none" else "") + "); --explain shows the parts")
    if args.rerank != "none" and not args.quiet:
        c = result.cost
        gen = f" + {c['generalists']} generalist(s)" if c.get("generalists") else ""
        hint(f"stage 1: 1 probe pass ({c.get('probe_seconds', 0):.1f}s); stage 2: {c['models_scored']} of "
             f"{args.shortlist}{gen} shortlisted expert(s) scored, {c['forward_passes']} images, "
             f"{c['rerank_seconds']:.1f}s")
    return 0


def _print_table(recs: list[Any], with_prob: bool, explain: bool, fmt: str, rerank: str = "none") -> None:
    head = ["rank", "model", "d_asym", "score"] + (["prob"] if with_prob else [])
    if explain:
        head += ["d_task", "d_trivial", "bias"]
    if rerank != "none":
        head += [rerank, "stage-1 rank", "ordered by", "shortlisted as"]
    head += ["trained on", "card"]
    rows = []
    for r in recs:
        row = [str(r.rank), r.repo_id, f"{r.distance:.4f}", f"{r.score:.4f}"]
        if with_prob:
            row.append(f"{r.probability:.3f}")
        if explain:
            row += [f"{r.explain['d_sym_to_task']:.4f}", f"{r.explain['d_sym_to_trivial']:.4f}",
                    f"{r.explain['bias']:+.4f}"]
        if rerank != "none":
            row += [f"{r.transfer_score:.4f}" if r.transfer_score is not None else "-", str(r.stage1_rank),
                    r.ordered_by, r.shortlisted_by or "-"]
        row += [r.task or "-", _shown(r.url) if fmt == "table" else r.url]
        rows.append(row)
    emit(fmt, head, rows)


def _shown(url: str) -> str:
    """A local card as a path relative to the working directory (short, and a shell can open it)."""
    if not url.startswith("file://"):
        return url
    import os
    from urllib.parse import unquote, urlparse

    path = unquote(urlparse(url).path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel
