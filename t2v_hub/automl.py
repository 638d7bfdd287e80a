"""AutoML pre-step: which pretrained backbones to try first for a dataset.

``rank_backbones`` embeds the dataset once with the probe the hub's experts
share, ranks every expert in one listing, and returns names that
``timm.create_model`` accepts, so a search (Optuna, a grid, a person) can start
from the most promising backbones instead of a fixed list. One probe pass costs
the same whatever the number of candidates; methods like LogME/LEEP need a
forward pass of every candidate over the data.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch

from .embedding import Task2VecEmbedding
from .errors import RecommendError
from .recommend import Recommendation, choose_probe, embed_target, rank_experts, timm_name
from .selector import Model2Vec, load_selector

logger = logging.getLogger(__name__)


def rank_backbones(
    dataset: Any,
    candidates: Iterable[str] | None = None,
    *,
    hub: Any = "hf",
    top_k: int = 5,
    probe: str | None = None,
    method: str | None = None,
    alpha: float | None = None,
    selector: str | Model2Vec | None = None,
    trivial: Task2VecEmbedding | torch.Tensor | None = None,
    filter: list[str] | None = None,
    notes: list[str] | None = None,
    index: Any = None,
    **embed_kwargs: Any,
) -> list[Recommendation]:
    """Rank the hub's experts (or only ``candidates``, repo ids) as backbones for ``dataset``.

    ``dataset`` is anything :func:`t2v_hub.task2vec.embed` accepts, or an already
    computed :class:`Task2VecEmbedding`. ``hub`` is a spec for
    :func:`t2v_hub.hub.get_hub` ("hf", a URL, a folder) or a hub object. The probe,
    method and input size default to what most experts were embedded with;
    ``embed_kwargs`` (max_samples, seed, device, ...) go to ``embed``. Each result's
    ``name`` is ``hf-hub:<repo_id>`` (or ``local-dir:<path>`` for a local hub repo
    that holds timm weights), ready for ``timm.create_model``. ``index`` (a folder
    from ``t2v-hub index`` or a loaded :class:`~t2v_hub.expert_index.ExpertIndex`)
    ranks from the memory-mapped index instead of listing the hub (large hubs).
    """
    from .hub import get_hub, list_experts

    hub_obj = get_hub(hub) if isinstance(hub, str) else hub
    notes = notes if notes is not None else []
    if index is not None:
        return _rank_from_index(dataset, index, candidates, hub_obj, top_k, probe, method, alpha, selector, trivial,
                                notes, embed_kwargs)
    experts, skipped = list_experts(hub_obj, filter=filter)
    for repo_id, reason in skipped:
        logger.info("skipped %s: %s", repo_id, reason)
    if candidates is not None:
        wanted = list(dict.fromkeys(candidates))
        have = {ex.repo_id for ex in experts}
        missing = [c for c in wanted if c not in have]
        if missing:
            notes.append(f"{len(missing)} candidate(s) carry no usable embedding and are not ranked: "
                         + ", ".join(missing[:5]))
        experts = [ex for ex in experts if ex.repo_id in set(wanted)]
        if not experts:
            raise RecommendError(f"none of the {len(wanted)} candidates has a usable TASK2VEC embedding on "
                                 f"{getattr(hub_obj, 'description', 'the hub')}; attach embeddings first")
    if not experts:
        raise RecommendError(f"no experts found on {getattr(hub_obj, 'description', 'the hub')}")
    if isinstance(dataset, Task2VecEmbedding):
        target = dataset
    else:
        plan = choose_probe(experts, probe, method)
        embed_kwargs.setdefault("quiet", True)
        target = embed_target(dataset, plan, **embed_kwargs)
    sel = load_selector(selector, hub_obj) if selector is not None else None
    return rank_experts(
        target, experts, alpha=alpha, selector=sel, trivial=trivial, top_k=top_k,
        name_for=lambda r: timm_name(r, hub_obj), notes=notes,
    )


def _rank_from_index(
    dataset: Any, index: Any, candidates: Iterable[str] | None, hub_obj: Any, top_k: int, probe: str | None,
    method: str | None, alpha: float | None, selector: str | Model2Vec | None,
    trivial: Task2VecEmbedding | torch.Tensor | None, notes: list[str], embed_kwargs: dict[str, Any],
) -> list[Recommendation]:
    from dataclasses import replace

    from .expert_index import ExpertIndex, load_index, rank_index

    idx = index if isinstance(index, ExpertIndex) else load_index(index)
    plan = idx.plan()
    if (probe and probe != plan.probe) or (method and method != plan.method):
        raise RecommendError(f"the index holds {plan.probe} ({plan.method}) embeddings, not {probe or plan.probe} "
                             f"({method or plan.method})")
    if isinstance(dataset, Task2VecEmbedding):
        target = dataset
    else:
        embed_kwargs.setdefault("quiet", True)
        target = embed_target(dataset, plan, **embed_kwargs)
    sel = load_selector(selector, hub_obj) if selector is not None else None
    name_for = lambda r: timm_name(r, hub_obj)  # noqa: E731
    if candidates is None:
        return rank_index(target, idx, alpha=alpha, selector=sel, trivial=trivial, top_k=top_k, name_for=name_for,
                          notes=notes)
    wanted = set(candidates)
    missing = sorted(wanted - set(idx.ids))
    if missing:
        notes.append(f"{len(missing)} candidate(s) are not in the index and are not ranked: " + ", ".join(missing[:5]))
    # Scores do not depend on which experts are ranked with them (probabilities do: renormalised).
    ranked = [r for r in rank_index(target, idx, alpha=alpha, selector=sel, trivial=trivial, top_k=idx.size,
                                    name_for=name_for, notes=notes) if r.repo_id in wanted]
    if not ranked:
        raise RecommendError(f"none of the {len(wanted)} candidates is in the index {idx.root}")
    total = sum(r.probability for r in ranked) if sel is not None else None
    return [replace(r, rank=i, probability=(r.probability / total) if total else r.probability)
            for i, r in enumerate(ranked[:top_k], start=1)]


__all__ = ["rank_backbones"]
