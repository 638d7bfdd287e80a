"""`t2v-hub matrix`: the distance matrix of a set of task embeddings, and pictures of it.

Prints the matrix (CSV or JSON) to stdout; --plot draws it as a clustered heatmap,
--embedding-plot draws a 2-D t-SNE map of the tasks coloured by a metadata field
(--color-by). Arguments may be embedding files or folders of them. Labels are
the embeddings' dataset ids (file stems where missing or repeated).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..constants import ASYM_ALPHA
from ._common import (
    PLOT_SUFFIXES,
    add_format_arg,
    check_writable,
    emit,
    float_in,
    given_flags,
    hint,
    print_json,
)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("matrix", help="distance matrix, clustered heatmap and t-SNE map", description=__doc__)
    p.add_argument("embeddings", nargs="*", help=".safetensors embeddings, or folders holding them")
    p.add_argument("--hub", default=None, help="also every expert of this hub ('hf', a URL or a local hub folder), "
                                               "in the embedding space most of them share")
    p.add_argument("--asymmetric", action="store_true", help="d_asym(row -> column) instead of d_sym")
    p.add_argument("--alpha", type=float_in(0.0, 1.0), default=None,
                   help=f"trivial-task weight, with --asymmetric (default {ASYM_ALPHA})")
    p.add_argument("--trivial", default=None, help="trivial-task embedding file for --asymmetric")
    add_format_arg(p, default="csv", what="the matrix")
    p.add_argument("--no-print", action="store_true", help="print nothing on stdout (only write the plots)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write the clustered heatmap here")
    p.add_argument("--embedding-plot", default=None, metavar="PNG", help="write the 2-D map here")
    p.add_argument("--color-by", default="dataset_id", metavar="FIELD", help="metadata field colouring the map")
    p.add_argument("--title", default=None, help="figure title")
    return p


def _files(args: list[str]) -> list[Path]:
    from ..errors import EmbeddingError

    out: list[Path] = []
    for a in args:
        p = Path(a)
        if p.is_dir():
            found = sorted(p.glob("*.safetensors"))
            if not found:
                raise EmbeddingError(f"folder {a!r} holds no .safetensors embeddings")
            out.extend(found)
        else:
            out.append(p)
    return out


def labels_for(paths: list[Path], metas: list[dict[str, str]]) -> list[str]:
    """dataset_id, or the file stem where the id is missing or shared by several files."""
    ids = [m.get("dataset_id") or p.stem for p, m in zip(paths, metas, strict=True)]
    return [i if ids.count(i) == 1 else f"{i} [{p.stem}]" for i, p in zip(ids, paths, strict=True)]


def _refuse_idle_flags(args: argparse.Namespace) -> None:
    """Flags that shape a plot, with no plot asked for, are an error rather than a silent no-op."""
    from ..errors import T2VError

    plots = [f for f, v in (("--plot", args.plot), ("--embedding-plot", args.embedding_plot)) if v]
    if "--color-by" in given_flags(args, ("color_by",)) and not args.embedding_plot:
        raise T2VError("--color-by colours the t-SNE map: add --embedding-plot map.png, or drop --color-by")
    if args.title is not None and not plots:
        raise T2VError("--title names a figure: add --plot heat.png or --embedding-plot map.png, or drop --title")
    if args.no_print and not plots:
        raise T2VError("--no-print with no --plot or --embedding-plot leaves nothing to do: add a plot, or drop "
                       "--no-print")


def run(args: argparse.Namespace) -> int:
    from ..embedding import Task2VecEmbedding, stack
    from ..errors import T2VError
    from ..selection.distances import cdist_asym, pdist

    extra = [] if args.asymmetric else given_flags(args, ("alpha", "trivial"))
    if extra:
        raise T2VError(f"{extra[0]} applies to d_asym: add --asymmetric, or drop {extra[0]}")
    _refuse_idle_flags(args)
    if args.alpha is None:
        args.alpha = ASYM_ALPHA
    paths = _files(args.embeddings)
    for out in (args.plot, args.embedding_plot):
        if out:
            check_writable(out, suffix=PLOT_SUFFIXES, example="matrix.png")
    embs = [Task2VecEmbedding.load(p) for p in paths]
    if args.hub:
        from ..hub import get_hub, list_experts
        from ..selection.recommend import choose_probe

        experts, skipped = list_experts(get_hub(args.hub))
        before = len(embs)
        if experts:
            plan = choose_probe(experts)
            chosen = [e for e in experts if e.embedding.probe == plan.probe and e.embedding.method == plan.method]
            if embs:  # with files given, the hub's experts must share their space
                chosen = [e for e in chosen if e.embedding.compat_key() == embs[0].compat_key()]
            for e in chosen:
                embs.append(e.embedding)
                paths.append(Path(e.repo_id.replace("/", "--")))
                e.embedding.metadata.setdefault("dataset_id", e.task or e.repo_id)
        if len(embs) == before:  # say so: a hub that adds nothing is usually the wrong folder or space
            why = (f"{len(experts)} expert(s), none in the space of {paths[0]}" if experts and before else
                   f"no usable experts ({len(skipped)} skipped: see t2v-hub experts --hub {args.hub})" if skipped else
                   "no experts")
            hint(f"note: --hub {args.hub} adds nothing to the matrix: {why}")
    if len(embs) < 2:
        raise T2VError("matrix needs at least two embeddings (files, folders or --hub experts)")
    X = stack(embs)  # raises naming the first incompatible field
    if args.asymmetric:
        if args.trivial:
            t0 = Task2VecEmbedding.load(args.trivial)
            embs[0].check_compatible(t0)
        else:
            from ..trivial import trivial_for

            t0 = trivial_for(embs[0])
        D = cdist_asym(X, X, t0, alpha=args.alpha)
        D.fill_diagonal_(0.0)
        kind = f"d_asym(row -> column), alpha={args.alpha}"
    else:
        D = pdist(X)
        kind = "d_sym"
    labels = labels_for(paths, [e.metadata for e in embs])
    if args.no_print:
        pass
    elif args.format == "json":
        print_json({"labels": labels, "files": [str(p) for p in paths], "asymmetric": args.asymmetric,
                    "alpha": args.alpha if args.asymmetric else None, "matrix": D.tolist()})
    else:
        emit(args.format, ["", *labels], [[lb, *(f"{v:.6f}" for v in row)] for lb, row in zip(labels, D.tolist(),
                                                                                               strict=True)])
    probe = embs[0].probe
    if args.plot:
        from ..plots import plot_distance_matrix

        plot_distance_matrix(D, labels, args.plot, title=args.title or f"TASK2VEC distances ({probe})",
                             colorbar_label=kind)
        hint(f"heatmap written to {args.plot}")
    if args.embedding_plot:
        from ..plots import plot_embedding_map

        groups = [e.metadata.get(args.color_by) or "(none)" for e in embs]
        if all(g == "(none)" for g in groups):
            hint(f"note: no embedding has metadata field {args.color_by!r}; all points share one colour")
        plot_embedding_map(D, labels, groups, args.embedding_plot, color_by=args.color_by,
                           title=args.title or f"TASK2VEC map ({probe})")
        hint(f"map written to {args.embedding_plot}")
    return 0

