"""t2v-hub: TASK2VEC task embeddings for model hubs and AutoML.

Main entry points: :func:`embed` (dataset -> :class:`Task2VecEmbedding`),
:mod:`t2v_hub.distances`, :mod:`t2v_hub.fisher` (``estimate``), :mod:`t2v_hub.hub`
and :func:`rank_backbones` (the AutoML pre-step).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .automl import rank_backbones  # noqa: E402
from .embedding import Task2VecEmbedding  # noqa: E402
from .probes import create_probe  # noqa: E402
from .recommend import Recommendation, rank_experts  # noqa: E402
from .selection_metrics import evaluate_selection  # noqa: E402
from .selector import Model2Vec, SelectorConfig, load_selector, loo_model2vec, train_model2vec  # noqa: E402
from .task2vec import embed, trivial_embedding  # noqa: E402

__all__ = [
    "Model2Vec",
    "Recommendation",
    "SelectorConfig",
    "Task2VecEmbedding",
    "__version__",
    "create_probe",
    "embed",
    "evaluate_selection",
    "load_selector",
    "loo_model2vec",
    "rank_backbones",
    "rank_experts",
    "train_model2vec",
    "trivial_embedding",
]
