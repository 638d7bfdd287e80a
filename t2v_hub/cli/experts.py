"""`t2v-hub experts`: list the models that carry a task embedding.

One listing of the hub (models tagged `task2vec` and every --filter tag, with their
card metadata), then each embedding file through the download cache, checked
against the sha256 in its card. Experts go to stdout as a table or JSON; repos
that were skipped (missing, mismatched or incompatible embeddings) are named on
stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..constants import FISHER_METHODS
from ._common import add_format_arg, add_hub_args, emit, hint, print_json, probe_name


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("experts", help="list models carrying a task embedding", description=__doc__)
    p.add_argument("--filter", action="append", default=[], metavar="TAG", help="also require this tag (repeatable)")
    p.add_argument("--probe", type=probe_name, default=None, help="only embeddings made with this probe")
    p.add_argument("--method", default=None, choices=FISHER_METHODS,
                   help="only embeddings made with this Fisher method")
    add_format_arg(p, what="the experts")
    add_hub_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..hub import get_hub, list_experts

    hub = get_hub(args.hub, endpoint=args.endpoint, token=args.token)
    experts, skipped = list_experts(hub, filter=args.filter, probe=args.probe, method=args.method)
    rows = [
        {
            "repo_id": e.repo_id,
            "probe": e.entry.get("probe"),
            "method": e.entry.get("method"),
            "task": e.task,
            "dataset_revision": e.entry.get("dataset_revision"),
            "num_samples": e.entry.get("num_samples"),
            "dim": e.embedding.dim,
            "norm": round(e.embedding.norm, 6),
            "file": e.entry.get("file"),
            "sha256": e.entry.get("sha256"),
            "revision": e.revision,
            "url": e.url,
        }
        for e in experts
    ]
    if args.format == "json":
        print_json(rows)
    elif args.format == "csv":
        emit("csv", list(rows[0]) if rows else ["repo_id"], [list(r.values()) for r in rows])
    else:
        _print_table(rows)
    for repo_id, reason in skipped:
        print(f"warning: skipped {_cell(repo_id)}: {_cell(reason)}", file=sys.stderr)
    if not experts:
        hint(f"no experts found on {hub.description}" + (f" for probe {args.probe}" if args.probe else ""))
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    cols = ("repo_id", "probe", "method", "task", "num_samples", "dim", "norm", "url")
    cells = [[_cell(r[c]) for c in cols] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    # Repo ids and dataset names come from strangers' cards: no control characters on a terminal.
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))
