"""`t2v-hub attach`: attach a task embedding to a model repo (file + card, one commit).

The embedding comes from a file (--embedding, made by `t2v-hub embed`) or is
computed here from the model's training data (--dataset). The repo receives
task2vec/<probe>.safetensors and a `task2vec` block, tag and section in its
README.md, in one commit; a concurrent change to the repo is reported, never
overwritten. Prints the commit URL (or the planned changes with --dry-run).
"""

from __future__ import annotations

import argparse

from ..constants import DEFAULT_PROBE
from ..errors import T2VError
from ._common import add_data_args, add_hub_args, add_probe_args, hint


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("attach", help="attach a task embedding to a model repo", description=__doc__)
    p.add_argument("--model", required=True, help="model repo id, namespace/name")
    p.add_argument("--embedding", default=None, help="embedding file (.safetensors from `t2v-hub embed`)")
    # --dataset and --embedding are alternatives: --dataset is optional here.
    add_data_args(p, required=False, dataset_help="compute the embedding from this dataset (or pass --embedding)")
    add_probe_args(p, None)
    p.set_defaults(method=None)  # None = taken from --embedding, montecarlo for --dataset
    p.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing to main")
    p.add_argument("--license", default=None, help="license of the model, for a new card (e.g. apache-2.0)")
    p.add_argument("--base-model", default=None, help="the model this one was fine-tuned from, for a new card")
    p.add_argument("--create-repo", action="store_true",
                   help="create the model repo first when it does not exist (like `hf repo create`)")
    p.add_argument("--dry-run", action="store_true", help="show the planned commit, write nothing")
    p.add_argument(
        "--no-nearest", action="store_true",
        help="don't list the nearest known tasks (other experts on the hub) in the card",
    )
    p.add_argument("--quiet", action="store_true", help="no progress or hints on stderr")
    add_hub_args(p)
    return p


def run(args: argparse.Namespace) -> int:
    from ..embedding import Task2VecEmbedding
    from ..hub import get_hub, push_embedding
    from ..hub.base import validate_repo_id
    from ..hub.licenses import check_base_model, check_license

    validate_repo_id(args.model)
    check_license(args.license)  # card fields the Hub would refuse: before minutes of embedding
    check_base_model(args.base_model)
    if (args.dataset is None) == (args.embedding is None):
        raise T2VError("pass exactly one of --dataset (compute the embedding) or --embedding FILE")
    hub = get_hub(args.hub, endpoint=args.endpoint, token=args.token)
    if args.embedding is not None:
        from ._common import refuse_compute_flags

        refuse_compute_flags(args, f"--embedding {args.embedding}")
        emb = Task2VecEmbedding.load(args.embedding)
        for name, wanted, have in (("probe", args.probe, emb.probe), ("method", args.method, emb.method)):
            if wanted is not None and wanted != have:
                raise T2VError(f"--{name} {wanted} does not match the embedding file's {name} {have!r}; drop --{name}")
    else:
        # Fail on an unusable hub or repo before spending minutes computing the embedding.
        if not hub.repo_exists(args.model) and not args.create_repo:
            raise T2VError(f"repository {args.model!r} not found on {hub.description}; pass --create-repo to "
                           "create it")
        from ._common import embed_from_args

        args.probe = args.probe or DEFAULT_PROBE
        args.method = args.method or "montecarlo"
        emb = embed_from_args(args, quiet=args.quiet, stats={})

    if str(emb.metadata.get("weights", "")).startswith("random") and not args.quiet:
        hint(f"warning: this embedding was made with a random-init probe ({emb.metadata['weights']}); it is "
             "comparable only with other random-init embeddings of the same probe, not with pretrained ones")
    nearest = None if args.no_nearest else _nearest_tasks(hub, args.model, emb)
    result = push_embedding(hub, args.model, emb, create_pr=args.create_pr, dry_run=args.dry_run, nearest=nearest,
                            create_repo=args.create_repo, license=args.license, base_model=args.base_model)
    if args.dry_run:
        _print_plan(result, hub.description)
        return 0
    if not result.changed:
        print(result.commit_url)
        if not args.quiet:
            hint(f"{args.model} already carries this embedding ({result.path}); nothing was committed")
        return 0
    print(result.pr_url or result.commit_url)
    if not args.quiet:
        what = "opened a pull request on" if result.pr_url else "committed to"
        hint(f"{what} {args.model}: {result.path} + README.md (commit {str(result.commit_id)[:10]})")
        if result.note:
            hint(result.note)
    return 0


def _nearest_tasks(hub: object, repo_id: str, emb: object, k: int = 3) -> list[tuple[str, float]] | None:
    """The k known tasks closest to ``emb`` (d_sym) among the hub's other experts of the same probe.

    Best effort: the card shows them when available; a hub that cannot be listed
    (permissions, no experts yet) just yields no "nearest" block.
    """
    from ..errors import T2VError as _Err
    from ..hub import list_experts
    from ..selection.distances import cdist

    try:
        experts, _ = list_experts(hub, probe=emb.probe)  # type: ignore[attr-defined]
    except _Err:
        return None
    others = [e for e in experts if e.repo_id != repo_id and e.embedding.compat_key() == emb.compat_key()]  # type: ignore[attr-defined]
    if not others:
        return None
    d = cdist([emb], [e.embedding for e in others])[0]  # type: ignore[list-item]
    order = d.argsort()[:k].tolist()
    return [(f"{others[i].task or others[i].repo_id} ({others[i].repo_id})", float(d[i])) for i in order]


def _print_plan(result: object, where: str) -> None:
    from ..hub import PushResult

    assert isinstance(result, PushResult)
    if not result.changed:
        print(f"dry run: {result.repo_id} already carries this embedding; nothing would be committed")
        return
    if result.note:
        print(f"dry run: {result.note}")
    parent = f"parent {result.parent[:10]}" if result.parent else "a new repository"
    print(f"dry run: one commit to {result.repo_id} on {where} ({parent}), nothing written")
    for path, size in result.files.items():
        extra = f", sha256 {result.sha256}" if path == result.path else ""
        print(f"  write {path} ({size:,} bytes{extra})")
    diff = result.card_diff()
    if diff:
        print(diff, end="" if diff.endswith("\n") else "\n")
