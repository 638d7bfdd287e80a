"""Data layer (imports only ``errors``/``constants`` of t2v-hub, never the pipeline or selection): a labelled image dataset -> a classification task for TASK2VEC.

``load_task`` resolves the source (Hub id, local folder or file, datasets
object), detects the image and label columns by feature type, selects a
seeded subset, and returns :class:`TaskData`, whose ``tensors``/``loader``
decode every selected image once into the probe's eval crop; :class:`TensorTask`
is a task given as preprocessed tensors, :class:`TensorBatches` its batches, and
:func:`as_task` turns anything ``embed`` accepts into one of the two.
``balanced_indices`` draws class-balanced indices for head fitting.
"""

from __future__ import annotations

from .images import Preprocessor
from .sampling import balanced_indices
from .select import STREAM_SHUFFLE_BUFFER
from .task import TaskData, load_task
from .tensors import TensorBatches, TensorTask, as_task

__all__ = [
    "STREAM_SHUFFLE_BUFFER",
    "Preprocessor",
    "TaskData",
    "TensorBatches",
    "TensorTask",
    "as_task",
    "balanced_indices",
    "load_task",
]
