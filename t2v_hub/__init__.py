"""t2v-hub: TASK2VEC task embeddings for model hubs and AutoML.

Main entry points: :func:`embed` (dataset -> :class:`Task2VecEmbedding`),
:mod:`t2v_hub.distances` (``d_sym``, ``d_asym``, ``cdist``), :mod:`t2v_hub.fisher`
(``estimate``), :mod:`t2v_hub.hub`, :func:`recommend` / :func:`rank_backbones`
(the AutoML pre-step) and :func:`score_models` (transferability of given models).

Layout (each package's docstring says what it may import):

- floor 0, imported by everyone: ``constants``, ``errors``, ``version``, ``config``,
  ``registry``, ``embedding`` (the artifact);
- floor 1, the rooms: ``data/``, ``probes/``, ``fisher/``, ``hub/``, ``head``,
  ``distributed``: never import the pipeline, ``selection`` or ``cli``;
- floor 2, the pipeline: ``task2vec`` (the thin conductor) and ``trivial``;
- floor 3, ``selection/`` (everything that ranks experts) and ``automl``;
- floor 4, ``cli/`` (one module per command).

Names are imported lazily so ``import t2v_hub`` (and ``t2v-hub --help``) does not
pay for torch, timm and datasets until something needs them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

_LAZY = {
    "Task2VecEmbedding": ".embedding",
    "create_probe": ".probes",
    "embed": ".task2vec",
    "trivial_embedding": ".trivial",
    "rank_backbones": ".automl",
    "recommend": ".selection.recommend",
    "RecommendResult": ".selection.recommend",
    "Recommendation": ".selection.scoring",
    "rank_experts": ".selection.scoring",
    "evaluate_selection": ".selection.metrics",
    "Model2Vec": ".selection.model2vec",
    "SelectorConfig": ".selection.model2vec",
    "load_selector": ".selection.model2vec",
    "loo_model2vec": ".selection.training",
    "train_model2vec": ".selection.training",
    "score_models": ".selection.features",
}

if TYPE_CHECKING:
    from .automl import rank_backbones
    from .embedding import Task2VecEmbedding
    from .probes import create_probe
    from .selection.features import score_models
    from .selection.metrics import evaluate_selection
    from .selection.model2vec import Model2Vec, SelectorConfig, load_selector
    from .selection.recommend import RecommendResult, recommend
    from .selection.scoring import Recommendation, rank_experts
    from .selection.training import loo_model2vec, train_model2vec
    from .task2vec import embed
    from .trivial import trivial_embedding


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 't2v_hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [  # noqa: F822 - resolved lazily by __getattr__
    "Model2Vec", "RecommendResult", "Recommendation", "SelectorConfig", "Task2VecEmbedding", "__version__",
    "create_probe", "embed", "evaluate_selection", "load_selector", "loo_model2vec", "rank_backbones",
    "rank_experts", "recommend", "score_models", "train_model2vec", "trivial_embedding",
]
