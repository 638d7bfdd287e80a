"""AutoML pre-step: which pretrained backbones to try first for a dataset.

``rank_backbones`` embeds the dataset once with the probe the hub's experts
share, ranks every expert, and returns names that ``timm.create_model`` accepts,
so a search (Optuna, a grid, a person) can start from the most promising
backbones instead of a fixed list. One probe pass costs the same whatever the
number of candidates; methods like LogME/LEEP need a forward pass of every
candidate over the data. It is :func:`t2v_hub.selection.recommend.recommend`,
the same flow ``t2v-hub recommend`` runs, returning only the ranking.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from .embedding import Task2VecEmbedding
from .errors import RecommendError
from .selection.model2vec import Model2Vec
from .selection.recommend import recommend
from .selection.rerank import DEFAULT_SHORTLIST
from .selection.scoring import Recommendation


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
    rerank: str = "none",
    shortlist: int = DEFAULT_SHORTLIST,
    max_model_mb: float | None = None,
    generalists: int | None = None,
    **embed_kwargs: Any,
) -> list[Recommendation]:
    """Rank the hub's experts (or only ``candidates``, repo ids) as backbones for ``dataset``.

    Arguments as for :func:`t2v_hub.selection.recommend.recommend`; messages worth
    showing a person are appended to ``notes``. Each result's ``name`` is
    ``hf-hub:<repo_id>`` (or ``local-dir:<path>`` for a local hub repo that holds
    timm weights), ready for ``timm.create_model(name, pretrained=True)``. ``rerank``
    (``logme``, ``hscore``, ``knn``) scores the first ``shortlist`` experts' own features
    on the dataset and reorders them (two stages; see ``t2v-hub recommend --rerank``), with a
    selector's ``generalists`` added to that shortlist.
    """
    if notes is not None and not isinstance(notes, list):  # appended to after the ranking: check first
        raise RecommendError(f"notes={type(notes).__name__}: expected a list to append the notes to, or None")
    result = recommend(dataset, hub=hub, index=index, candidates=candidates, top_k=top_k, probe=probe,
                       method=method, alpha=alpha, selector=selector, trivial=trivial, filter=filter, rerank=rerank,
                       shortlist=shortlist, max_model_mb=max_model_mb, generalists=generalists, **embed_kwargs)
    if notes is not None:
        notes.extend(result.notes)
    return result.recommendations


__all__ = ["rank_backbones"]
