"""`t2v-hub selector`: train and evaluate a MODEL2VEC expert selector.

train: learn a temperature and biases (by default one weight per probe layer, shared
by every expert; --bias picks the supplement's per-expert ones) from an error matrix
(tasks x experts, CSV or JSON) and the task embeddings (a folder of .safetensors or a
hub); writes a small selector file for `t2v-hub recommend --selector`.

eval: leave-one-out over tasks. Reports the paper's metric (relative increase of
the chosen expert's error over the best expert's), weighted Kendall tau and top-1
hit rate for MODEL2VEC and the baselines: chance (expected), d_sym, d_asym, each
expert's mean error on the other tasks, and --static EXPERT if given.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict
from typing import Any

from ..constants import (
    ASYM_ALPHA,
    M2V_ALPHA_SOFT,
    M2V_BIAS,
    M2V_BIAS_KINDS,
    M2V_EPOCHS,
    M2V_LAYER_DECAY,
    M2V_LAYER_EPOCHS,
    M2V_LR,
    M2V_PRIOR,
    M2V_PRIOR_FOLDS,
    M2V_PRIOR_KINDS,
    M2V_WEIGHT_DECAY,
)
from ._common import (
    add_format_arg,
    emit,
    emit_summary,
    float_in,
    given_flags,
    hint,
    int_in,
    nonneg_int,
    positive_int,
    print_json,
    probe_name,
    seed_int,
)


def _add_common(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--errors", help="error matrix: CSV (rows = task ids, columns = expert ids) or JSON")
    src.add_argument("--eval-results", metavar="HUB",
                     help="read the error matrix from the experts' own .eval_results/*.yaml (and model-index) "
                          "on this hub (hf, URL or folder): rows = dataset ids, columns = repos")
    ev = p.add_argument_group("reading --eval-results")
    ev.add_argument("--eval-metric", choices=("accuracy", "error"), default="accuracy",
                    help="what the values are (default %(default)s: error = 1 - value)")
    ev.add_argument("--eval-scale", choices=("auto", "fraction", "percent"), default="auto",
                    help="auto: percent when any value is above 1")
    ev.add_argument("--eval-task-id", default=None, help="keep only entries for this task id of a benchmark")
    p.add_argument("--tasks", required=True, help="task embeddings: a folder of .safetensors, or a hub")
    p.add_argument("--experts", default=None, help="expert embeddings: a hub or folder (default: look in --tasks)")
    p.add_argument("--probe", type=probe_name, default=None, help="probe to use where sources hold several (default: most common)")
    p.add_argument("--trivial", default=None, help="trivial-task embedding file (default: the probe's, computed once)")
    g = p.add_argument_group("MODEL2VEC training (supplement 4.3 defaults)")
    g.add_argument("--alpha", type=float_in(0.0, 1.0), default=ASYM_ALPHA, help="trivial-task weight of d_asym")
    g.add_argument("--alpha-soft", type=float_in(0.0, 1e6, lo_open=True), default=M2V_ALPHA_SOFT, help="soft-label sharpness")
    g.add_argument("--lr", type=float_in(0.0, 10.0, lo_open=True), default=M2V_LR, help="Adam learning rate of the biases")
    g.add_argument("--weight-decay", type=float_in(0.0, 10.0), default=M2V_WEIGHT_DECAY, help="weight decay of the biases")
    g.add_argument("--epochs", type=positive_int, default=M2V_EPOCHS, help="training epochs (supplement: 81)")
    g.add_argument("--batch-size", type=nonneg_int, default=0, help="tasks per step (0 = all)")
    g.add_argument("--bias", choices=M2V_BIAS_KINDS, default=M2V_BIAS,
                   help="per-filter log-scale (the supplement's bias), per-expert offset, both, none, or one weight "
                        "per probe layer shared by all experts (layer); default %(default)s. See BENCHMARKS.md: "
                        "the offset overfits to known domains")
    g.add_argument("--layer-decay", type=float_in(0.0, 10.0), default=M2V_LAYER_DECAY,
                   help="--bias layer: L2 pull of the log-weights towards d_sym (default %(default)s)")
    g.add_argument("--layer-epochs", type=positive_int, default=M2V_LAYER_EPOCHS,
                   help="--bias layer: full-batch steps (default %(default)s)")
    g.add_argument("--seed", type=seed_int, default=0, help="order of the tasks with --batch-size > 0")
    g.add_argument("--prior", choices=M2V_PRIOR_KINDS, default=M2V_PRIOR,
                   help="cv: add the static prior (each expert's mean relative error increase) to the offsets, "
                        "weighted by how well it chooses on held-out clusters of the training tasks "
                        "(--prior-folds more trainings); none: the supplement's selector (default %(default)s)")
    g.add_argument("--prior-folds", type=int_in(2, 64), default=M2V_PRIOR_FOLDS,
                   help="--prior cv: clusters of the training tasks held out in turn (default %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress or hints on stderr (warnings stay)")


def _hint(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        hint(msg)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("selector", help="train / evaluate a MODEL2VEC selector", description=__doc__)
    s = p.add_subparsers(dest="selector_command", metavar="ACTION")
    t = s.add_parser("train", help="train a selector from an error matrix")
    _add_common(t)
    t.add_argument("--out", default="selector.safetensors", help="selector file to write (default %(default)s)")
    t.add_argument("--exclude-self", action="store_true",
                   help="leave out each expert's cell on its own training task (same dataset id): learn only "
                        "from how experts transfer")
    add_format_arg(t, what="the summary")
    e = s.add_parser("eval", help="leave-one-out evaluation against baselines")
    _add_common(e)
    e.add_argument("--static", default=None, metavar="EXPERT", help="also report 'always pick this expert'")
    e.add_argument("--exclude-self", action="store_true",
                   help="ignore the expert trained on the task itself (same dataset id)")
    add_format_arg(e, what="the results")
    for action in (t, e):  # errors name this action's flags (cli/flags.py)
        action.set_defaults(_parser=action)
    return p


# Training flags each --bias kind ignores: given anyway, they would train another selector than the
# user believes (the layer weights have their own epochs and decay; the per-expert kinds ignore those).
_UNUSED_BY_LAYER = ("epochs", "weight_decay", "batch_size", "seed")
_LAYER_ONLY = ("layer_decay", "layer_epochs")


def _refuse_ignored(args: argparse.Namespace) -> None:
    from ..errors import T2VError

    if not args.eval_results:
        extra = given_flags(args, ("eval_metric", "eval_scale", "eval_task_id"))
        if extra:
            raise T2VError(f"{extra[0]} reads --eval-results: drop it, or pass --eval-results HUB instead of --errors")
    if args.bias == "layer":
        extra = given_flags(args, _UNUSED_BY_LAYER)
        if extra:
            raise T2VError(f"{extra[0]} trains the per-expert biases (--bias both, filter, scalar or none); "
                           f"--bias layer trains with --layer-epochs, --layer-decay and --lr: drop {extra[0]}, "
                           "or pick another --bias")
    else:
        extra = given_flags(args, _LAYER_ONLY)
        if extra:
            raise T2VError(f"{extra[0]} applies to --bias layer, not --bias {args.bias}: drop it")
    if args.prior == "none" and given_flags(args, ("prior_folds",)):
        raise T2VError("--prior-folds applies to --prior cv, not --prior none: drop it")
    if args.bias != "layer" and args.batch_size == 0 and given_flags(args, ("seed",)):
        raise T2VError("--seed orders the tasks of each step, so it needs --batch-size > 0 (0 = all tasks at once)")


def _config(args: argparse.Namespace) -> Any:
    from ..selection.model2vec import SelectorConfig

    return SelectorConfig(alpha=args.alpha, alpha_soft=args.alpha_soft, lr=args.lr, weight_decay=args.weight_decay,
                          epochs=args.epochs, batch_size=args.batch_size, bias=args.bias, seed=args.seed,
                          layer_decay=args.layer_decay, layer_epochs=args.layer_epochs, prior=args.prior,
                          prior_folds=args.prior_folds)


def _layers(args: argparse.Namespace, first: Any) -> Any:
    """Each filter's layer id when --bias layer needs them (from the embeddings' probe), else None."""
    if args.bias != "layer":
        return None
    from ..selection.layer_weights import layer_ids

    return layer_ids(first)


def _prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Align the error matrix with the embeddings; report what had to be left out."""
    from ..embedding import Task2VecEmbedding, stack
    from ..errors import SelectorError
    from ..selection.error_matrix import load_embedding_source, load_error_matrix

    if args.errors:
        em = load_error_matrix(args.errors)
    else:
        from ..hub import get_hub
        from ..selection.eval_results import read_eval_results

        report = read_eval_results(get_hub(args.eval_results), metric=args.eval_metric, scale=args.eval_scale,
                                   task_id=args.eval_task_id)
        for repo, why in report.skipped:
            hint(f"skipped evaluation results of {repo}: {why}")
        em = report.matrix
        _hint(args, f"read {len(em.task_ids)} dataset(s) x {len(em.expert_ids)} expert(s) from {args.eval_results} "
             f"({', '.join(f'{n} cells from {k}' for k, n in report.sources.items() if n)})")
    tasks_src = load_embedding_source(args.tasks, args.probe)
    if args.experts is None and args.eval_results and args.eval_results != args.tasks:
        args.experts = args.eval_results  # the repos that reported the errors hold the expert embeddings
    experts_src = load_embedding_source(args.experts, args.probe) if args.experts else tasks_src
    task_ids = [t for t in em.task_ids if t in tasks_src]
    expert_ids = [e for e in em.expert_ids if e in experts_src]
    lost_t = [t for t in em.task_ids if t not in tasks_src]
    lost_e = [e for e in em.expert_ids if e not in experts_src]
    if lost_t:
        _hint(args, f"{len(lost_t)} task(s) without an embedding left out: {', '.join(lost_t[:5])}")
    if lost_e:
        _hint(args, f"{len(lost_e)} expert(s) without an embedding left out: {', '.join(lost_e[:5])}")
    if not task_ids or not expert_ids:
        what, src = ("task", args.tasks) if not task_ids else ("expert", args.experts or args.tasks)
        wanted = em.task_ids if not task_ids else em.expert_ids
        held = list(tasks_src if not task_ids else experts_src)
        raise SelectorError(f"no {what} of the error matrix has an embedding in {src}: the matrix names "
                            f"{', '.join(map(repr, wanted[:3]))}, {src} holds {', '.join(map(repr, held[:3])) or 'none'}; "
                            f"the {what} ids must match (a task's id is its embedding's dataset_id)")
    em = em.subset(task_ids, expert_ids)
    if em.missing:
        _hint(args, f"{em.missing} missing/NaN error cell(s) skipped")
    embs = [tasks_src[t] for t in task_ids] + [experts_src[e] for e in expert_ids]
    try:
        stack(embs)
    except Exception as exc:
        raise SelectorError(f"task and expert embeddings are not comparable: {exc}") from exc
    import torch

    X = torch.stack([tasks_src[t].vector for t in task_ids])
    F = torch.stack([experts_src[e].vector for e in expert_ids])
    if args.trivial:
        t0 = Task2VecEmbedding.load(args.trivial)
    else:
        from ..trivial import trivial_for

        t0 = trivial_for(embs[0])
    embs[0].check_compatible(t0)
    exclude = torch.tensor([[experts_src[e].metadata.get("dataset_id") == t for e in expert_ids] for t in task_ids])
    return {"em": em, "X": X, "F": F, "t0": t0, "first": embs[0], "exclude": exclude}


def run(args: argparse.Namespace) -> int:
    from ..errors import SelectorError

    if args.selector_command in ("train", "eval"):
        _refuse_ignored(args)  # before any data is read
        return _train(args) if args.selector_command == "train" else _eval(args)
    raise SelectorError("choose an action: `t2v-hub selector train ...` or `t2v-hub selector eval ...`")


def _train(args: argparse.Namespace) -> int:
    from ..selection.model2vec import compat_of
    from ..selection.training import train_model2vec
    from ._common import check_writable

    check_writable(args.out, example="selector.safetensors")
    d = _prepare(args)
    em = d["em"]
    errors = em.errors.masked_fill(d["exclude"], float("nan")) if args.exclude_self else em.errors
    sel = train_model2vec(d["X"], d["F"], errors, d["t0"].vector, _config(args), expert_ids=em.expert_ids,
                          compat=compat_of(d["first"]), task_ids=em.task_ids, layers=_layers(args, d["first"]))
    sel.save(args.out)
    summary = {"out": args.out, "experts": len(em.expert_ids), "tasks": len(em.task_ids),
               "skipped_cells": sel.info["skipped_cells"], "tasks_per_expert": sel.info["tasks_per_expert"],
               "gamma": sel.gamma, "final_loss": sel.info["final_loss"], "prior_weight": sel.info.get("prior_weight"),
               "probe": sel.compat.get("probe"), "config": asdict(sel.config),
               # What `recommend --rerank` adds to its shortlist with this selector (--generalists).
               "generalists": [{"expert": e, "mean_relative_error_increase": round(float(sel.generalist[j]), 4)}
                               for e, j in ((e, sel.expert_ids.index(e)) for e in sel.generalist_ids()[:3])]}
    best = ", ".join(f"{g['expert']} ({g['mean_relative_error_increase']:+.0%})" for g in summary["generalists"])
    emit_summary(args.format, summary, f"selector for {summary['experts']} experts trained on {summary['tasks']} "
                                       f"tasks (gamma={sel.gamma:.4g}, loss={summary['final_loss']:.4g}"
                                       + (f", prior weight {summary['prior_weight']:g}" if summary["prior_weight"] is not None else "")
                                       + f") -> {args.out}"
                                       + (f"; best generalists: {best}" if best else ""))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ..errors import SelectorError
    from ..selection.distances import cdist
    from ..selection.metrics import (
        chance_baseline,
        evaluate_selection,
        loo_mean_error_scores,
        static_scores,
    )
    from ..selection.training import loo_model2vec

    d = _prepare(args)
    em, X, F, t0 = d["em"], d["X"], d["F"], d["t0"].vector
    if len(em.task_ids) < 2:
        raise SelectorError("leave-one-out needs at least two tasks")
    exclude = d["exclude"] if args.exclude_self else None
    # What the learned baselines may learn from: with --exclude-self, not the cells of an
    # expert on its own task either (they would teach "pick the expert trained on this
    # task", which the evaluation never allows), as in benchmarks/reproduce.py.
    train_errors = em.errors.masked_fill(exclude, float("nan")) if exclude is not None else em.errors
    sym = cdist(X, F)  # (T, E)
    asym = sym - args.alpha * cdist(F, t0[None])[:, 0][None, :]
    results: dict[str, dict[str, float]] = {"chance (expected)": chance_baseline(em.errors, exclude)}
    results["d_sym"] = evaluate_selection(em.errors, sym, exclude)
    results[f"d_asym (alpha={args.alpha})"] = evaluate_selection(em.errors, asym, exclude)
    results["mean error on other tasks"] = evaluate_selection(em.errors, loo_mean_error_scores(train_errors), exclude)
    if args.static:
        if args.static not in em.expert_ids:
            raise SelectorError(f"--static {args.static!r} is not an expert of the error matrix")
        results[f"always {args.static}"] = evaluate_selection(
            em.errors, static_scores(em.errors, em.expert_ids.index(args.static)), exclude)
    _hint(args, f"leave-one-out MODEL2VEC over {len(em.task_ids)} tasks...")
    scores = loo_model2vec(X, F, train_errors, t0, _config(args), progress=not args.quiet, layers=_layers(args, d["first"]))
    results["MODEL2VEC (leave-one-out)"] = evaluate_selection(em.errors, scores, exclude)
    if args.format == "json":
        print_json({"tasks": len(em.task_ids), "experts": len(em.expert_ids), "results": results,
                    "config": asdict(_config(args))})
        return 0
    if args.format == "csv":
        cols = ("relative_error_increase", "relative_error_increase_per_task", "weighted_tau", "top1")
        emit("csv", ("method", *cols), [[name, *(r[c] for c in cols)] for name, r in results.items()])
        return 0
    w = sys.stdout
    w.write(f"{len(em.task_ids)} tasks x {len(em.expert_ids)} experts; mean best error "
            f"{results['d_sym']['mean_best_error']:.4g}\n")
    w.write(f"{'method':<34}{'rel. error incr.':>17}{'(per task)':>12}{'w. tau':>9}{'top-1':>8}\n")
    for name, r in results.items():
        w.write(f"{name:<34}{_pct(r['relative_error_increase']):>17}{_pct(r['relative_error_increase_per_task']):>12}"
                f"{r['weighted_tau']:>9.3f}{r['top1']:>8.3f}\n")
    return 0


def _pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{100 * x:+.2f}%"
