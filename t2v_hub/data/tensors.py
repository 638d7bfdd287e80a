"""Tasks given as preprocessed tensors, their batches, and seeded subsampling.

:class:`TensorTask` is the in-memory sibling of :class:`~t2v_hub.data.task.TaskData`
(images already normalised for the probe); both expose ``tensors()``,
``metadata``, ``label_kind`` and ``num_classes``, which is all the pipeline reads.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import DataError
from .rows import ImageRows

LABEL_KINDS = ("single", "multi", "regression")


class TensorTask:
    """A task given as preprocessed tensors (images already normalised for the probe).

    ``label_kind="regression"``: ``labels`` are float targets, ``(N,)`` or ``(N, k)``,
    standardised here per dimension (raw values kept in ``raw_labels``, means/stds in
    ``metadata``); otherwise int64 class ids ``(N,)`` or a multi-hot ``(N, C)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        metadata: dict[str, Any] | None = None,
        label_kind: str | None = None,
    ) -> None:
        _check_tensors(images, labels, label_kind)
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels; pass one label per image")
        if images.shape[0] == 0:
            raise DataError("the task has no samples; pass a non-empty dataset")
        if label_kind not in (None, *LABEL_KINDS):
            raise DataError(f"label_kind must be 'single', 'multi' or 'regression', got {label_kind!r}")
        self.raw_labels: torch.Tensor | None = None
        target_meta: dict[str, Any] = {}
        if label_kind == "regression":
            from .columns import standardize

            raw = labels.detach().to(torch.float64).reshape(labels.shape[0], -1)
            bad = (~torch.isfinite(raw)).any(1).nonzero().flatten().tolist()
            if bad:
                raise DataError(f"row {bad[0]}: regression target {raw[bad[0]].tolist()} is not finite; drop that row")
            labels, mean, std = standardize(raw, "labels")
            self.raw_labels = raw
            target_meta = {"target_dim": int(raw.shape[1]), "target_mean": json.dumps(mean),
                           "target_std": json.dumps(std)}
        self.images, self.labels = images, labels
        self.label_kind = label_kind or ("multi" if labels.dim() > 1 else "single")
        self.num_samples = int(images.shape[0])
        if self.label_kind == "regression":
            self.num_classes = int(labels.shape[1])
        else:
            self.num_classes = int(labels.shape[1]) if labels.dim() > 1 else int(labels.max()) + 1
            present = int((labels.sum(0) > 0).sum()) if labels.dim() > 1 else int(torch.unique(labels).numel())
            if present < 2:
                raise DataError(f"the task has {present} class; TASK2VEC needs at least 2 classes with samples")
        fp = hashlib.sha256(images.contiguous().numpy().tobytes() + labels.contiguous().numpy().tobytes()).hexdigest()
        self.metadata: dict[str, Any] = {"dataset_id": "<tensors>", "fingerprint": fp[:16], **(metadata or {})}
        self.metadata.setdefault("num_classes", self.num_classes)
        self.metadata.setdefault("num_samples", self.num_samples)
        self.metadata.setdefault("label_kind", self.label_kind)
        self.metadata.update(target_meta)

    def tensors(self, transform_cfg: dict[str, Any], **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels

    def image_rows(self, transform_cfg: dict[str, Any] | None = None, *, progress: bool = True) -> ImageRows:
        """The images as :class:`~t2v_hub.data.rows.ImageRows` (already normalised: a plain view)."""
        return ImageRows(self.images)

    def subsample(self, max_samples: int, seed: int) -> TensorTask:
        """``max_samples`` rows drawn without replacement by a generator seeded with ``seed``.

        Shuffled before truncating: the first N rows of a dataset are rarely a fair sample.
        """
        if max_samples <= 0:
            raise DataError(f"max_samples must be positive, got {max_samples}")
        regression = self.label_kind == "regression"
        if regression and max_samples < 2:
            raise DataError(f"max_samples={max_samples} is below 2; a regression task needs at least 2 samples")
        if not regression and max_samples < self.num_classes:
            raise DataError(
                f"max_samples={max_samples} is below the number of classes ({self.num_classes}); "
                "use at least one sample per class"
            )
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(self.num_samples, generator=g)[:max_samples]
        meta = {**self.metadata, "num_samples": len(idx)}
        if regression:
            assert self.raw_labels is not None  # standardised again over the kept samples
            return TensorTask(self.images[idx], self.raw_labels[idx], meta, label_kind="regression")
        return TensorTask(self.images[idx], self.labels[idx], meta)


def _check_tensors(images: Any, labels: Any, label_kind: str | None) -> None:
    """What the probe and the likelihood need, refused here in words instead of deep inside torch."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError(f"images and labels must be torch tensors, got {type(images).__name__} and "
                        f"{type(labels).__name__}; or pass a dataset (Hub id, folder, datasets object)")
    if images.dim() != 4 or not images.is_floating_point():
        raise DataError(f"images must be a float tensor (N, C, H, W) normalised for the probe, got "
                        f"{images.dtype} of shape {tuple(images.shape)}; or pass a dataset, which t2v-hub "
                        "preprocesses with the probe's own data config")
    if not bool(torch.isfinite(images).all()):
        raise DataError("images contain NaN or Inf; fix or drop those images")
    if label_kind == "regression":
        if not labels.is_floating_point():
            raise DataError(f"regression labels must be float, got {labels.dtype}")
        return
    if labels.dim() == 1:
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise DataError(f"labels are {labels.dtype}: pass int64 class ids, or label_kind='regression' "
                            "for float targets")
        if labels.numel() and int(labels.min()) < 0:
            raise DataError(f"labels hold {int(labels.min())}: class ids are 0..C-1 (a -1 usually means "
                            "'no label': drop those rows)")
    elif labels.dim() == 2:
        if labels.numel() and not bool(((labels == 0) | (labels == 1)).all()):
            raise DataError("multi-label targets (N, C) must be 0/1 (multi-hot)")
    else:
        raise DataError(f"labels must be (N,) class ids or an (N, C) multi-hot, got shape {tuple(labels.shape)}")


class TensorBatches:
    """Re-iterable batches over pre-decoded tensors; with ``desc`` a progress bar (img/s) on stderr.

    Re-iterable (not a generator) because the variational estimator makes several
    passes over the data: a one-shot generator silently ended it after the first.
    """

    def __init__(self, images: torch.Tensor | ImageRows, labels: torch.Tensor, batch_size: int,
                 desc: str | None = None) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be at least 1, got {batch_size}")
        self.images, self.labels, self.batch_size, self.desc = images, labels, batch_size, desc

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels, batch_size = self.images, self.labels, self.batch_size
        bar = None
        if self.desc is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(images.shape[0]), desc=self.desc, unit="img", file=sys.stderr, leave=False)
        try:
            for i in range(0, images.shape[0], batch_size):
                yield images[i : i + batch_size], labels[i : i + batch_size]
                if bar is not None:
                    bar.update(min(batch_size, images.shape[0] - i))
        finally:
            if bar is not None:
                bar.close()

    def __len__(self) -> int:
        return (int(self.images.shape[0]) + self.batch_size - 1) // self.batch_size


def as_task(dataset: Any, *, max_samples: int | None, seed: int, data_options: dict[str, Any]) -> Any:
    """A :class:`TensorTask` or :class:`~t2v_hub.data.task.TaskData` for anything ``embed`` accepts."""
    if isinstance(dataset, (TensorTask, tuple)) and data_options:
        raise DataError(f"{', '.join(f'{k}=' for k in sorted(data_options))} only apply to datasets that are loaded "
                        "(Hub ids, folders, files, datasets objects), not to tensors; drop them")
    if isinstance(dataset, TensorTask):
        task = dataset
    elif isinstance(dataset, tuple) and len(dataset) == 2 and isinstance(dataset[0], torch.Tensor):
        task = TensorTask(dataset[0], dataset[1])
    else:
        from .task import TaskData, load_task

        if isinstance(dataset, TaskData):  # load_task's result, inspected before embedding it
            return _loaded(dataset, max_samples, data_options)
        return load_task(dataset, max_samples=max_samples, seed=seed, **data_options)
    return task.subsample(max_samples, seed) if max_samples is not None else task


def _loaded(task: Any, max_samples: int | None, data_options: dict[str, Any]) -> Any:
    """A task ``load_task`` already selected: loading options cannot apply any more."""
    if data_options:
        raise DataError(f"{', '.join(f'{k}=' for k in sorted(data_options))} apply when a dataset is loaded; this "
                        "task is loaded already: pass them to load_task, or pass the dataset itself")
    if max_samples is not None and max_samples < task.num_samples:
        raise DataError(f"max_samples={max_samples} cannot shrink a task loaded with {task.num_samples} samples "
                        f"(the seeded, class-balanced selection happens in load_task): pass "
                        f"max_samples={max_samples} to load_task, or pass the dataset itself")
    return task


__all__ = ["LABEL_KINDS", "TensorBatches", "TensorTask", "as_task"]
