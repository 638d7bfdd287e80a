"""Data layer: a labelled image dataset -> a classification task for TASK2VEC.

``load_task`` resolves the source (Hub id, local folder or file, datasets
object), detects the image and label columns by feature type, selects a
seeded subset, and returns :class:`TaskData`, whose ``tensors``/``loader``
decode every selected image once into the probe's eval crop.
``balanced_indices`` draws class-balanced indices for head fitting.
"""

from __future__ import annotations

from .images import Preprocessor
from .sampling import balanced_indices
from .task import STREAM_SHUFFLE_BUFFER, TaskData, load_task

__all__ = ["STREAM_SHUFFLE_BUFFER", "Preprocessor", "TaskData", "balanced_indices", "load_task"]
