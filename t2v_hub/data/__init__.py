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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .images import Preprocessor
    from .sampling import balanced_indices
    from .select import STREAM_SHUFFLE_BUFFER
    from .task import TaskData, load_task
    from .tensors import TensorBatches, TensorTask, as_task

# Lazy, as the package root: a task given as tensors (TensorTask) must not pay for importing
# `datasets` and pyarrow (1.2 s and 83 MiB of RSS on the 2-core machine), which only
# load_task needs.
_WHERE = {
    "Preprocessor": "images", "balanced_indices": "sampling", "STREAM_SHUFFLE_BUFFER": "select",
    "TaskData": "task", "load_task": "task", "TensorBatches": "tensors", "TensorTask": "tensors",
    "as_task": "tensors",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
