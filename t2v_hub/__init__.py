"""t2v-hub: TASK2VEC task embeddings for model hubs and AutoML.

Main entry points: :func:`embed` (dataset -> :class:`Task2VecEmbedding`),
:mod:`t2v_hub.distances`, :mod:`t2v_hub.fisher` (``estimate``), :mod:`t2v_hub.hub`
and :func:`rank_backbones` (the AutoML pre-step).
"""

from __future__ import annotations

__version__ = "0.1.0"

from typing import Any

from .embedding import Task2VecEmbedding  # noqa: E402
from .probes import create_probe  # noqa: E402
from .task2vec import embed, trivial_embedding  # noqa: E402


def rank_backbones(*args: Any, **kwargs: Any) -> Any:
    """AutoML pre-step; see :func:`t2v_hub.automl.rank_backbones`."""
    from .automl import rank_backbones as _rank

    return _rank(*args, **kwargs)


__all__ = ["Task2VecEmbedding", "__version__", "create_probe", "embed", "rank_backbones", "trivial_embedding"]
