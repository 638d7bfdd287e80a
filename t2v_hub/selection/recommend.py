"""The one recommend flow: list experts -> choose the probe -> embed the target -> rank.

:func:`recommend` is what ``t2v-hub recommend``, :func:`t2v_hub.rank_backbones`
(the AutoML pre-step) and the expert-index path all go through, so the CLI and the
Python API cannot drift apart. Ranking itself is :mod:`.scoring` (in memory) or
:mod:`.index` (memory-mapped); this module decides which, and how to embed.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ..config import check_count, check_names, space_of
from ..constants import DEFAULT_FISHER_METHOD, DEFAULT_GENERALISTS
from ..embedding import Task2VecEmbedding
from ..errors import RecommendError, SelectorError
from .model2vec import Model2Vec, load_selector
from .prior_term import has_learned_prior
from .rerank import DEFAULT_SHORTLIST, check_rerank
from .scoring import (
    EmbedPlan,
    ExpertLike,
    Recommendation,
    check_alpha,
    partition_experts,
    probes_available,
    rank_experts,
    timm_name,
)

logger = logging.getLogger(__name__)


def choose_probe(experts: Sequence[ExpertLike], probe: str | None = None, method: str | None = None) -> EmbedPlan:
    """The embedding settings most experts share (restricted to ``probe``/``method`` if given)."""
    if not experts:
        raise RecommendError("no experts found: nothing to choose a probe from (check hub and filter)")
    pool = [ex for ex in experts if (probe is None or ex.embedding.probe == probe)
            and (method is None or (ex.embedding.method or DEFAULT_FISHER_METHOD) == method)]
    if not pool:
        want = " ".join(x for x in (probe, method) if x)
        raise RecommendError(
            f"no expert has an embedding for {want}; experts are available for: {probes_available(experts)}"
        )
    keys = Counter(
        (s.probe, s.method, s.input_size, s.include_norm) for s in (space_of(ex.embedding.metadata) for ex in pool)
    )
    # Most common first; ties broken by name so the choice does not depend on listing order.
    (p, m, size, norm), n = min(keys.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return EmbedPlan(p, m, size, norm, n)


def embed_target(dataset: Any, plan: EmbedPlan, **embed_kwargs: Any) -> Task2VecEmbedding:
    """Embed ``dataset`` as ``plan`` says; explicit ``embed_kwargs`` win (cached by default)."""
    from ..task2vec import embed

    kwargs: dict[str, Any] = {"input_size": plan.input_size, "include_norm": plan.include_norm, "cache": True}
    kwargs.update({k: v for k, v in embed_kwargs.items() if v is not None})
    return embed(dataset, plan.probe, plan.method, **kwargs)


@dataclass
class RecommendResult:
    """The ranking and everything a person or a program should know about how it was made."""

    recommendations: list[Recommendation]
    target: Task2VecEmbedding
    source: str  # the hub's or the index's description
    num_ranked: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # no usable embedding
    incompatible: list[tuple[str, str]] = field(default_factory=list)  # another embedding space
    notes: list[str] = field(default_factory=list)
    # What it cost: seconds of the probe pass (0 when given an embedding), forward passes of stage 2.
    cost: dict[str, Any] = field(default_factory=dict)


def _target(dataset: Any, plan: EmbedPlan, on_embed: Callable[[EmbedPlan], None] | None,
            embed_kwargs: dict[str, Any]) -> Task2VecEmbedding:
    if isinstance(dataset, Task2VecEmbedding):
        return dataset
    if on_embed is not None:
        on_embed(plan)
    embed_kwargs.setdefault("quiet", True)
    return embed_target(dataset, plan, **embed_kwargs)


def _only_candidates(experts: list[Any], candidates: Iterable[str], source: str, notes: list[str]) -> list[Any]:
    wanted = list(dict.fromkeys(candidates))
    have = {ex.repo_id for ex in experts}
    missing = [c for c in wanted if c not in have]
    if missing:
        notes.append(f"{len(missing)} candidate(s) carry no usable embedding and are not ranked: "
                     + ", ".join(missing[:5]))
    kept = [ex for ex in experts if ex.repo_id in set(wanted)]
    if not kept:
        raise RecommendError(f"none of the {len(wanted)} candidates has a usable TASK2VEC embedding on {source}; "
                             "attach embeddings first")
    return kept


def recommend(
    dataset: Any,
    *,
    hub: Any = "hf",
    index: Any = None,
    candidates: Iterable[str] | None = None,
    top_k: int = 5,
    probe: str | None = None,
    method: str | None = None,
    alpha: float | None = None,
    selector: str | Model2Vec | None = None,
    trivial: Task2VecEmbedding | torch.Tensor | None = None,
    filter: list[str] | None = None,
    on_embed: Callable[[EmbedPlan], None] | None = None,
    rerank: str = "none",
    shortlist: int = DEFAULT_SHORTLIST,
    max_model_mb: float | None = None,
    on_rerank: Callable[[Recommendation, int, int], None] | None = None,
    generalists: int | None = None,
    **embed_kwargs: Any,
) -> RecommendResult:
    """Rank the hub's experts (or only ``candidates``, repo ids) for ``dataset``, best first.

    ``dataset`` is anything :func:`t2v_hub.embed` accepts, or a computed
    :class:`Task2VecEmbedding`. ``hub`` is a spec for :func:`t2v_hub.hub.get_hub`
    ("hf", a URL, a folder) or a hub object; with ``index`` (a folder from
    ``t2v-hub index`` or a loaded :class:`~t2v_hub.selection.index.ExpertIndex`) the
    experts come from the memory-mapped index instead and ``hub`` only resolves a
    selector repo and local weights. The probe, method and input size default to what
    most experts were embedded with; ``on_embed(plan)`` is called before embedding
    (progress); ``embed_kwargs`` (max_samples, seed, device, ...) go to ``embed``.

    Two stages: with ``rerank`` a transferability metric (``logme``, ``hscore``, ``knn``),
    the first ``shortlist`` experts of the TASK2VEC ranking are scored on the dataset
    with their own weights and reordered by the score (:mod:`.rerank`); ``"none"``
    ranks by TASK2VEC alone. ``generalists`` more experts join that shortlist: those
    with the lowest mean relative error on the selector's training tasks (without a
    selector: on the datasets the experts' own evaluation results on the hub name) that
    stage 1 did not already shortlist (:mod:`.generalist`); by default one when
    ``rerank`` is on and the selector records them, else none.
    """
    from ..hub import get_hub

    top_k = check_count("top_k", top_k, 1, error=RecommendError)
    shortlist = check_count("shortlist", shortlist, 1, error=RecommendError)
    check_alpha(alpha)
    filter, candidates, trivial = _checked_inputs(filter, candidates, trivial, index, probe, method)
    from .features import check_max_model_mb

    check_max_model_mb(max_model_mb)
    if not isinstance(hub, str) and not hasattr(hub, "list_models"):
        raise RecommendError(f"hub={hub!r}: expected 'hf', a URL, a local folder or a hub object")
    check_rerank(rerank, shortlist)
    if rerank != "none" and isinstance(dataset, Task2VecEmbedding):
        raise RecommendError("rerank needs the dataset's images, not an embedding file; pass the dataset "
                             "or rerank='none'")
    hub_obj = get_hub(hub) if isinstance(hub, str) else hub
    sel = load_selector(selector, hub_obj) if selector is not None and not isinstance(selector, Model2Vec) else selector
    notes: list[str] = []
    n_gen = resolve_generalists(generalists, rerank, sel, notes)
    stage2 = _Stage2(dataset, rerank, shortlist, max_model_mb, on_rerank, embed_kwargs, top_k,
                     _generalist_ids(sel, hub_obj, filter, notes) if n_gen else [], n_gen)
    top_k = stage2.stage1_top_k
    name_for = lambda r: timm_name(r, hub_obj)  # noqa: E731
    if index is not None:
        return stage2(_recommend_from_index(dataset, index, candidates, top_k, probe, method, alpha, sel, trivial,
                                            name_for, on_embed, embed_kwargs, stage2.by_prior, notes))
    from ..hub import list_experts

    source = getattr(hub_obj, "description", "the hub")
    experts, skipped = list_experts(hub_obj, filter=filter, progress=not embed_kwargs.get("quiet", True))
    for repo_id, reason in skipped:
        logger.info("skipped %s: %s", repo_id, reason)
    if candidates is not None:
        experts = _only_candidates(experts, candidates, source, notes)
    if not experts:
        tags = ", ".join(["task2vec", *(filter or [])])
        raise RecommendError(f"no experts found on {source} with tags {tags}; "
                             "attach embeddings with `t2v-hub attach` or change the tag filter")
    t0 = time.perf_counter()
    target = _target(dataset, choose_probe(experts, probe, method), on_embed, embed_kwargs)
    seconds = time.perf_counter() - t0
    compatible, incompatible = partition_experts(target, experts)
    recs = rank_experts(target, experts, alpha=alpha, selector=sel, trivial=trivial, top_k=top_k,
                        name_for=name_for, notes=notes, include=stage2.by_prior)
    return stage2(RecommendResult(recs, target, source, len(compatible), skipped,
                                  incompatible if compatible else [], notes, {"probe_seconds": round(seconds, 3)}))


def _checked_inputs(filter: Any, candidates: Any, trivial: Any, index: Any, probe: Any = None, method: Any = None
                    ) -> tuple[list[str] | None, list[str] | None, Task2VecEmbedding | torch.Tensor | None]:
    """recommend's filter, candidates and trivial in their one form, and index, probe and method checked;
    RecommendError naming the parameter otherwise."""
    for name, value, what in (("probe", probe, "a timm model name"), ("method", method, "a Fisher method name")):
        if value is not None and not isinstance(value, str):
            raise RecommendError(f"{name}={value!r}: expected {what}, or None for what most experts were embedded with")
    if isinstance(filter, str):  # one tag, as huggingface_hub's list_models(filter=) takes it
        filter = [filter]
    if isinstance(candidates, str):  # one repo id, not its characters
        candidates = [candidates]
    if index is not None and not isinstance(index, (str, os.PathLike)):
        from .index import ExpertIndex

        if not isinstance(index, ExpertIndex):
            raise RecommendError(f"index={type(index).__name__}: expected an index folder (from `t2v-hub index`) "
                                 "or a loaded ExpertIndex")
    return (None if filter is None else check_names("filter", filter, "tags", error=RecommendError),
            None if candidates is None else check_names("candidates", candidates, "repo ids", error=RecommendError),
            _trivial_arg(trivial))


def _trivial_arg(trivial: Any) -> Task2VecEmbedding | torch.Tensor | None:
    """``trivial=``: an embedding, a tensor of finite numbers, or a path to an embedding file."""
    if trivial is None or isinstance(trivial, Task2VecEmbedding):
        return trivial
    if isinstance(trivial, (str, os.PathLike)):
        return Task2VecEmbedding.load(trivial)
    if not isinstance(trivial, torch.Tensor):
        raise RecommendError(f"trivial={type(trivial).__name__}: expected a Task2VecEmbedding, a tensor or an "
                             "embedding file (from `t2v-hub trivial`)")
    if not bool(torch.isfinite(trivial).all()):
        raise RecommendError("trivial holds NaN or Inf: pass a finite trivial embedding (`t2v-hub trivial`)")
    return trivial


def resolve_generalists(generalists: int | None, rerank: str, sel: Model2Vec | None, notes: list[str]) -> int:
    """How many generalist slots stage 2's shortlist gets (see :mod:`.generalist`)."""
    has_prior = sel is not None and sel.generalist is not None
    if generalists is None:
        if rerank != "none" and sel is not None and not has_prior:
            notes.append("the selector records no generalist scores (written before they existed), so the shortlist "
                         "has no generalist slot; retrain it with `t2v-hub selector train` to add one")
        return DEFAULT_GENERALISTS if rerank != "none" and has_prior else 0
    n = check_count("generalists", generalists, 0, error=RecommendError)
    if n and rerank == "none":
        raise RecommendError(f"generalists={n} adds experts to stage 2's shortlist: pass rerank='logme' "
                             "(or 'hscore', 'knn'), or generalists=0")
    if n and sel is not None and not has_prior:
        raise RecommendError(f"generalists={n}: the selector records no generalist scores (written before they "
                             "existed); retrain it with `t2v-hub selector train`, or pass generalists=0")
    return n


def _generalist_ids(sel: Model2Vec | None, hub: Any, filter: list[str] | None, notes: list[str]) -> list[str]:
    """The experts by generalist score, best first: the selector's, else from the experts' own evaluation
    results on the hub (``.eval_results`` / model-index: one read per expert, so only when asked for)."""
    if sel is not None:
        return sel.generalist_ids()
    from .eval_results import read_eval_results
    from .generalist import generalist_order, generalist_scores

    try:
        em = read_eval_results(hub, filter=filter).matrix
        ids = [em.expert_ids[j] for j in generalist_order(generalist_scores(em.errors))]
    except SelectorError as exc:
        if "no evaluation results found" not in str(exc):  # conflicting or out-of-range results: say which
            raise RecommendError(f"generalists from the experts' evaluation results: {exc}") from exc
        ids = []
    if not ids:
        raise RecommendError("generalists need an error matrix: no selector was given and the hub's experts "
                             "publish no evaluation results on 2+ datasets; pass selector= or generalists=0")
    notes.append(f"generalists from the experts' own evaluation results on {len(em.task_ids)} dataset(s): "
                 + ", ".join(ids[:3]))
    return ids


class _Stage2:
    """The optional rerank, applied to stage 1's result (the same for a hub and an index)."""

    def __init__(self, dataset: Any, metric: str, shortlist: int, max_model_mb: float | None,
                 on_rerank: Callable[[Recommendation, int, int], None] | None, embed_kwargs: dict[str, Any],
                 top_k: int, by_prior: list[str], generalists: int) -> None:
        self.dataset, self.metric, self.shortlist, self.max_model_mb = dataset, metric, shortlist, max_model_mb
        self.on_rerank, self.top_k = on_rerank, top_k
        # Stage 1 also returns every expert the selector can name as a generalist, wherever it ranks them.
        self.by_prior, self.generalists = by_prior, generalists
        # The data options are what embed() does not take itself (split, label_column, ...).
        import inspect

        from ..task2vec import embed

        own = set(inspect.signature(embed).parameters)
        self.data_options = {k: v for k, v in embed_kwargs.items() if k not in own and v is not None}
        self.max_samples, self.seed = embed_kwargs.get("max_samples"), embed_kwargs.get("seed") or 0
        self.batch_size = embed_kwargs.get("batch_size") or 32
        self.device = embed_kwargs.get("device")
        # Stage 1 must rank at least the shortlist.
        self.stage1_top_k = max(top_k, shortlist) if metric != "none" else top_k

    def __call__(self, result: RecommendResult) -> RecommendResult:
        result.cost.setdefault("probe_passes", 0 if isinstance(self.dataset, Task2VecEmbedding) else 1)
        if self.metric == "none":
            result.cost.update(forward_passes=0, models_scored=0)
            return result
        from ..data import as_task
        from .rerank import rerank

        task = as_task(self.dataset, max_samples=self.max_samples, seed=self.seed, data_options=self.data_options)
        recs = result.recommendations
        by_id = {r.repo_id: r for r in recs}
        pool = [by_id[r] for r in self.by_prior if r in by_id]
        recs, cost = rerank(recs, task, self.metric, self.shortlist, result.notes, generalists=pool,
                            slots=self.generalists, max_model_mb=self.max_model_mb, batch_size=self.batch_size,
                            device=self.device, progress=self.on_rerank)
        result.recommendations = recs[: self.top_k]
        result.cost.update(forward_passes=cost.forward_passes, models_scored=cost.models_scored,
                           rerank_seconds=cost.seconds, rerank=self.metric, shortlist=self.shortlist,
                           generalists=sum(r.shortlisted_by == "generalist" for r in recs))
        return result


def _recommend_from_index(
    dataset: Any, index: Any, candidates: Iterable[str] | None, top_k: int, probe: str | None,
    method: str | None, alpha: float | None, sel: Model2Vec | None,
    trivial: Task2VecEmbedding | torch.Tensor | None, name_for: Callable[[str], str],
    on_embed: Callable[[EmbedPlan], None] | None, embed_kwargs: dict[str, Any], include: Sequence[str],
    notes: list[str],
) -> RecommendResult:
    from .index import ExpertIndex, load_index, rank_index

    idx = index if isinstance(index, ExpertIndex) else load_index(index)
    plan = idx.plan()
    if (probe and probe != plan.probe) or (method and method != plan.method):
        raise RecommendError(f"the index holds {plan.probe} ({plan.method}) embeddings, not {probe or plan.probe} "
                             f"({method or plan.method}); drop probe/method or build an index for the ones you want")
    target = _target(dataset, plan, on_embed, embed_kwargs)
    if sel is None and trivial is None and has_learned_prior(target) and idx.prior_scale is None:
        # Built before indexes stored priors, or some expert records none: one t0 column for all.
        notes.append("the index holds no per-expert learned priors, so variational experts are ranked with the "
                     "probe's t0; rebuild it with `t2v-hub index` for the per-expert prior term")
    try:
        if candidates is None:
            recs = rank_index(target, idx, alpha=alpha, selector=sel, trivial=trivial, top_k=top_k,
                              name_for=name_for, notes=notes, include=include)
            return RecommendResult(recs, target, str(idx.root), idx.size, notes=notes)
        wanted = set(candidates)
        missing = sorted(wanted - set(idx.ids))
        if missing:
            notes.append(f"{len(missing)} candidate(s) are not in the index and are not ranked: "
                         + ", ".join(missing[:5]))
        # Scores do not depend on which experts are ranked with them (probabilities do: renormalised).
        ranked = [r for r in rank_index(target, idx, alpha=alpha, selector=sel, trivial=trivial, top_k=idx.size,
                                        name_for=name_for, notes=notes) if r.repo_id in wanted]
        if not ranked:
            raise RecommendError(f"none of the {len(wanted)} candidates is in the index {idx.root}")
        total = sum(r.probability for r in ranked) if sel is not None else None
        keep = set(include)
        recs = [replace(r, rank=i, probability=(r.probability / total) if total else r.probability)
                for i, r in enumerate(ranked, start=1) if i <= top_k or r.repo_id in keep]
        return RecommendResult(recs, target, str(idx.root), len(ranked), notes=notes)
    finally:
        if not isinstance(index, ExpertIndex):
            idx.close()


__all__ = ["RecommendResult", "choose_probe", "embed_target", "recommend", "resolve_generalists"]
