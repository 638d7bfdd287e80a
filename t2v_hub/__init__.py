"""t2v-hub: TASK2VEC task embeddings for model hubs and AutoML."""

from __future__ import annotations

__version__ = "0.1.0"

from .embedding import Task2VecEmbedding  # noqa: E402

__all__ = ["Task2VecEmbedding", "__version__"]
