"""``load_task``: a labelled image dataset -> :class:`TaskData` (labels now, pixels on demand).

Selection happens on labels only (cheap): rows are shuffled with the seed
*before* truncating to ``max_samples`` (the reference implementation took the
first N), and the chosen row ids are sorted so that reads stay sequential.
Images are decoded once per transform config into a uint8 cache the first
time ``tensors``/``loader`` asks for them.

Regression targets (a float column, or fixed-length lists of floats; see
:mod:`.columns`) give ``label_kind="regression"`` and float32 ``N x k`` labels,
standardised per dimension over the samples used (again after bad images are
dropped); the means and standard deviations are kept in ``metadata``
(``target_mean``/``target_std``, JSON lists, and ``target_dim`` = k).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from datasets import IterableDataset
from tqdm.auto import tqdm

from .. import constants as K
from ..cache import scratch_dir
from ..errors import BadImageError, DataError, ImageTooLargeError
from . import columns as C

# Streaming: rows are shuffled through a buffer of this many before taking max_samples.
from .decode import DECODE_BATCH, Decoded, Refs, _as_list, _DecodeSet  # noqa: E402
from .dense import (
    TargetTransform,
    decode_target,
    encode_segmentation,
    kind_of,
    standardize_maps,
    target_array_of_row,
)
from .images import Preprocessor
from .rows import ImageRows, uint8_cache
from .select import Selected, _select_stream, _select_table, check_load_args  # noqa: E402
from .sources import resolve

ON_BAD_IMAGE = ("fail", "skip")
SHOWN_BAD_IMAGES = 3  # reasons named in the warning when on_bad_image="skip" drops rows


def public_dataset_id(dataset_id: str) -> str:
    """The id recorded in embeddings (and so in model cards): ``local:<name>`` for a local path.

    Embeddings travel to public hubs; an absolute path says nothing there and shows the
    owner's directory layout. The fingerprint already identifies the data.
    """
    if dataset_id.startswith("<") or not os.path.exists(dataset_id):
        return dataset_id  # a hub id or an in-memory object
    return "local:" + (os.path.basename(os.path.normpath(dataset_id)) or dataset_id)

class TaskData:
    """A classification or regression task: labels, class names, provenance, and its images on demand.

    ``labels`` is int64 (N) for single-label tasks, float32 multi-hot (N x C)
    for multi-label ones, and float32 standardised targets (N x k) for regression
    ones (``num_classes`` is then k, the number of outputs, and ``class_names``
    names the outputs); ``metadata`` holds str/int provenance (dataset id,
    revision, split, fingerprint, columns, label names JSON, bad-image count,
    seed). Rows dropped as bad images (on_bad_image="skip") leave ``labels``,
    ``num_samples`` and ``metadata`` once the images have been decoded.
    """

    def __init__(
        self,
        *,
        refs: Refs,
        keys: np.ndarray,
        labels: torch.Tensor,
        class_names: list[str],
        label_kind: str,
        metadata: dict[str, str | int],
        on_bad_image: str,
        seed: int,
        base_dir: str | None = None,
        token: Any = None,
        raw_targets: torch.Tensor | None = None,
        targets: Refs | None = None,
    ) -> None:
        self._refs = refs
        self._targets = targets  # dense tasks: the mask/map column, decoded with the images
        self._raw_targets = raw_targets  # regression: unstandardised float64 N x k
        self._keys = keys  # row ids in the source split (streaming: position in the read order)
        self.labels = labels
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.label_kind = label_kind
        self.metadata = metadata
        self.seed = seed
        self._on_bad = on_bad_image
        self._base_dir = base_dir
        self._token = token
        self._cache: tuple[str, Preprocessor, torch.Tensor] | None = None
        self._kept: torch.Tensor | None = None  # rows of the decode cache left after skipped images

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def rows(self) -> list[int]:
        """Row ids (in the source split) of the samples, in order."""
        return [int(k) for k in self._keys]

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self) -> str:
        return (
            f"TaskData({self.metadata.get('dataset_id')!r}, split={self.metadata.get('split')!r},"
            f" num_samples={self.num_samples}, num_classes={self.num_classes}, label_kind={self.label_kind!r})"
        )

    def tensors(
        self, transform_cfg: dict[str, Any], *, num_workers: int = 0, progress: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All samples as a float32 N x 3 x H x W normalised tensor, and their labels.

        Decodes every image once (in ``num_workers`` DataLoader workers) and caches
        the uint8 crops; rows whose image is bad are dropped when on_bad_image="skip".
        The float tensor is 4x the cache's size: use :meth:`loader` for big tasks.
        """
        return self.image_rows(transform_cfg, num_workers=num_workers, progress=progress).materialize(), self.labels

    def image_rows(self, transform_cfg: dict[str, Any], *, num_workers: int = 0, progress: bool = True) -> ImageRows:
        """All samples as :class:`~t2v_hub.data.rows.ImageRows`: normalised batch by batch.

        The decoded uint8 cache is kept (in RAM, or file-backed above
        ``constants.decode_ram_bytes()``); a float batch exists only while it is used.
        """
        pre, cache = self._ensure(transform_cfg, num_workers, progress)
        return ImageRows(cache, pre.normalize, self._kept)

    def loader(
        self,
        transform_cfg: dict[str, Any],
        batch_size: int,
        *,
        num_workers: int = 0,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        pin_memory: bool | None = None,
        progress: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(x, y) batches over the decoded cache (decoding first if needed).

        Shuffled orders come from ``generator`` (default: seeded with the task's
        seed, so every call gives the same order). Batches are pinned when CUDA
        is available, for ``.to(device, non_blocking=True)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pre, cache = self._ensure(transform_cfg, num_workers, progress)
        labels = self.labels
        n = cache.shape[0] if self._kept is None else int(self._kept.numel())
        if shuffle:
            order = torch.randperm(n, generator=generator or torch.Generator().manual_seed(self.seed))
        else:
            order = torch.arange(n)
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for start in range(0, n, batch_size):
                idx = order[start : start + batch_size]
                rows = idx if self._kept is None else self._kept[idx]
                x, y = pre.normalize(cache[rows]), labels[idx]
                yield (x.pin_memory(), y.pin_memory()) if pin else (x, y)

        return batches()

    def _ensure(
        self, transform_cfg: dict[str, Any], num_workers: int, progress: bool
    ) -> tuple[Preprocessor, torch.Tensor]:
        try:
            pre = Preprocessor(transform_cfg)
        except (ValueError, TypeError) as e:
            raise DataError(f"bad transform_cfg: {e}") from e
        if self._cache is not None and self._cache[0] == pre.key:
            return self._cache[1], self._cache[2]
        n = len(self._keys)
        out = uint8_cache((n, 3, *pre.size), K.decode_ram_bytes(), lambda: scratch_dir("decoded"))
        self._kept = None
        # Per-image copies go through numpy: torch would split each 150 KB copy
        # across its intra-op threads, which costs milliseconds on a busy machine.
        buf = out.numpy()
        bad: list[int] = []
        reasons: list[str] = []
        dset = _DecodeSet(self._refs, self._keys, pre, self._base_dir, self._token)
        with tqdm(total=n, disable=not progress, desc="decoding images", unit="img") as bar:
            for batch in self._batches(dset, num_workers):
                for pos, x, err, too_large in batch:
                    if x is not None:
                        buf[pos] = x.numpy()
                        continue
                    if self._on_bad == "fail":
                        kind = ImageTooLargeError if too_large else BadImageError
                        raise kind(
                            f"image of row {int(self._keys[pos])} cannot be used: {err}"
                            " (pass on_bad_image='skip' to drop such rows)"
                        )
                    bad.append(pos)
                    if len(reasons) < SHOWN_BAD_IMAGES:
                        reasons.append(f"row {int(self._keys[pos])}: {err}")
                bar.update(len(batch))
        if bad:
            self._kept = self._drop(bad)
            # skip mode drops rows by request, but silently changing what the task is made of is not
            # what a user asked for: say how many, and why (the first few), as datasets' filters do.
            more = f"; {len(bad) - len(reasons)} more" if len(bad) > len(reasons) else ""
            warnings.warn(f"skipped {len(bad)} of {n} images that cannot be used ({'; '.join(reasons)}{more})",
                          RuntimeWarning, stacklevel=2)
        if self._targets is not None:
            self._decode_targets(pre, progress)
        self._cache = (pre.key, pre, out)
        return pre, out

    def _decode_targets(self, pre: Preprocessor, progress: bool) -> None:
        """Dense tasks: every kept row's mask/map at the probe's crop; sets labels, class names, metadata."""
        column = str(self.metadata["label_column"])
        tf = TargetTransform(pre, self.label_kind)
        out = []
        keys = [int(k) for k in self._keys]
        with tqdm(total=len(keys), disable=not progress, desc="decoding targets", unit="img") as bar:
            for start in range(0, len(keys), DECODE_BATCH):
                part = keys[start : start + DECODE_BATCH]
                for row, value, ref in zip(part, self._targets.get(part), self._refs.get(part), strict=True):
                    out.append(decode_target(value, ref, row, column, tf, self._base_dir, self._token))
                bar.update(len(part))
        stacked = torch.stack(out)
        size = list(stacked.shape[-2:])
        if self.label_kind == "segmentation":
            self.labels, self.class_names = encode_segmentation(stacked, column)
            extra: dict[str, str | int] = {}
        else:
            self.labels, mean, std = standardize_maps(stacked, column)
            k = int(stacked.shape[1])
            self.class_names = [column] if k == 1 else [f"{column}[{i}]" for i in range(k)]
            extra = {"target_dim": k, "target_mean": json.dumps(mean), "target_std": json.dumps(std)}
        self.num_classes = len(self.class_names)
        self.metadata.update(num_classes=self.num_classes, label_names=C.names_json(self.class_names),
                             target_size=json.dumps(size), **extra)

    @staticmethod
    def _batches(dset: _DecodeSet, num_workers: int) -> Iterator[list[Decoded]]:
        n = len(dset)
        if num_workers <= 0:
            for start in range(0, n, DECODE_BATCH):
                yield dset.__getitems__(list(range(start, min(n, start + DECODE_BATCH))))
            return
        dl = torch.utils.data.DataLoader(
            dset, batch_size=DECODE_BATCH, num_workers=num_workers, collate_fn=_as_list, prefetch_factor=4
        )
        yield from dl

    def _drop(self, bad: list[int]) -> torch.Tensor:
        """Forget rows whose image failed (skip mode); the task must still be a task.

        Returns the rows of the decode cache that are kept (the cache itself is not copied).
        """
        keep = torch.ones(len(self._keys), dtype=torch.bool)
        keep[bad] = False
        n_bad = int(self.metadata.get("num_bad_images", 0)) + len(bad)
        if not bool(keep.any()):
            raise DataError(f"all {len(bad)} images failed to decode; nothing is left of the task")
        self._keys = self._keys[keep.numpy()]
        if self._targets is not None:
            self.labels = self.labels[keep]  # a placeholder: the targets are decoded after this
        elif self._raw_targets is not None:
            # Standardise again over the samples that are left.
            self._raw_targets = self._raw_targets[keep]
            column = str(self.metadata.get("label_column"))
            self.labels, mean, std = C.standardize(self._raw_targets, column)
            self.metadata.update(target_mean=json.dumps(mean), target_std=json.dumps(std))
        else:
            self.labels = self.labels[keep]
            _check_classes(self.labels, f"after dropping {n_bad} bad images")
        self.metadata["num_bad_images"] = n_bad
        self.metadata["num_samples"] = self.num_samples
        return keep.nonzero().flatten()


def _check_classes(labels: torch.Tensor, when: str) -> None:
    if C.present_classes(labels) < 2:
        raise DataError(
            f"only one class is present {when}: TASK2VEC needs at least two (raise max_samples or check the labels)"
        )


def _labels_of(
    sel: Selected, base_dir: str | None, token: Any
) -> tuple[torch.Tensor, str, torch.Tensor | None, dict[str, str | int]]:
    """(labels, label kind, raw regression targets, target metadata) of the selected rows."""
    spec, labels = sel.spec, sel.labels
    if sel.targets is not None:
        # The kind (class mask or float map) is what the first selected row stores.
        row = int(sel.keys[0])
        return labels, kind_of(target_array_of_row(sel.targets.get([row])[0], row, spec.column, base_dir, token)), \
            None, {}
    if spec.label_kind == "regression":
        std_labels, mean, std = C.standardize(labels, spec.column)
        meta: dict[str, str | int] = {"target_dim": len(sel.names), "target_mean": json.dumps(mean),
                                      "target_std": json.dumps(std)}
        return std_labels, "regression", labels, meta
    _check_classes(labels, "in the selected samples")
    return labels, spec.label_kind, None, {}


def load_task(
    source: Any,
    *,
    split: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    max_samples: int | None = None,
    seed: int = 0,
    on_bad_image: str = "fail",
    token: str | bool | None = None,
) -> TaskData:
    """Load one split of a labelled image dataset as a classification or regression task.

    ``source``: a Hub dataset id, a class-per-folder image tree (optionally with
    train/test/... split folders), a ``save_to_disk`` folder, a parquet, arrow,
    csv/tsv or json(l) file (image paths relative to the file's folder), a
    folder of such files, or a ``Dataset``/``IterableDataset``/``DatasetDict``.
    ``streaming`` applies to Hub ids and data files; in-memory ``Dataset``
    objects and image trees are already read lazily (only selected images are
    ever decoded). ``split`` defaults to "train", else the only split.

    Class ids: ClassLabel ids as stored (the label space is the ClassLabel's
    names); plain integers or strings are mapped to 0..C-1 in sorted order over
    the whole split (over the rows read when streaming), recorded in
    ``metadata["label_names"]``. Images are not touched here: bad ones surface
    in :meth:`TaskData.tensors`.

    Regression targets (float column, or lists of ``k`` floats): label kind
    "regression", labels float32 ``N x k`` standardised over the selected samples
    (means/stds in ``metadata["target_mean"]``/``["target_std"]``); a constant or
    non-finite target is a :class:`DataError`; at least 2 samples are needed.
    """
    if on_bad_image not in ON_BAD_IMAGE:
        raise DataError(f"on_bad_image must be 'fail' or 'skip', got {on_bad_image!r}")
    max_samples, seed = check_load_args(streaming, image_column, label_column, max_samples, seed)
    r = resolve(source, split=split, config=config, revision=revision, streaming=streaming, token=token)
    select = _select_stream if isinstance(r.dataset, IterableDataset) else _select_table
    sel = select(r, image_column, label_column, max_samples, seed)
    refs, keys, spec, names, fingerprint = sel.refs, sel.keys, sel.spec, sel.names, sel.fingerprint
    labels, label_kind, raw_targets, target_meta = _labels_of(sel, r.base_dir, token)
    metadata: dict[str, str | int] = {
        "dataset_id": public_dataset_id(r.dataset_id),
        "split": r.split,
        "fingerprint": fingerprint,
        "image_column": refs.column,
        "label_column": spec.column,
        "label_kind": label_kind,
        "num_classes": len(names),
        "num_samples": int(labels.shape[0]),
        "label_names": C.names_json(names),
        "num_bad_images": 0,
        "seed": int(seed),
        **target_meta,
    }
    if r.revision:
        metadata["dataset_revision"] = r.revision
    if config:
        metadata["dataset_config"] = config
    return TaskData(
        refs=refs,
        keys=keys,
        labels=labels,
        class_names=names,
        label_kind=label_kind,
        metadata=metadata,
        on_bad_image=on_bad_image,
        seed=seed,
        base_dir=r.base_dir,
        token=token,
        raw_targets=raw_targets,
        targets=sel.targets,
    )
