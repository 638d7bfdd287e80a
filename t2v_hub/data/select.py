"""Choosing a task's rows: the seeded, class-aware selection from a table or a stream."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Image, IterableDataset

from ..config import check_count, check_flag, check_optional_count
from ..errors import DataError
from . import columns as C

# Streaming: rows are shuffled through a buffer of this many before taking max_samples.
from .decode import Refs, _ArrowRefs, _ListRefs  # noqa: E402
from .sources import Resolved

STREAM_SHUFFLE_BUFFER = 1000  # rows a streamed dataset is shuffled over before the first max_samples are taken


@dataclass
class Selected:
    """The chosen rows of a split: image references, row keys, the label spec, names and labels.

    Dense tasks: ``targets`` refers to the mask/map column (read with the images);
    ``names`` is empty and ``labels`` a placeholder until then.
    """

    refs: Refs
    keys: np.ndarray
    spec: C.LabelSpec
    names: list[str]
    labels: torch.Tensor
    fingerprint: str
    targets: Refs | None = None


def check_load_args(streaming: Any, image_column: Any, label_column: Any, max_samples: Any, seed: Any
                    ) -> tuple[int | None, int]:
    """load_task's arguments, each named if of the wrong kind (not a TypeError from a slice, a dict
    lookup or ``int()``, nor ``seed=2.5`` silently truncated). Returns ``max_samples`` and ``seed`` as ints."""
    check_flag("streaming", streaming, error=DataError)
    for name, value in (("image_column", image_column), ("label_column", label_column)):
        if value is not None and not isinstance(value, str):
            raise DataError(f"{name}={value!r}: expected a column name, or None to find it")
    if image_column is not None and image_column == label_column:
        raise DataError(f"image_column and label_column are both {image_column!r}")
    return (check_optional_count("max_samples", max_samples, 1, error=DataError),
            check_count("seed", seed, 0, error=DataError))


def _content_fingerprint(refs: list[Any], values: list[Any]) -> str:
    """For streams without a datasets fingerprint: hash what was actually read."""
    h = hashlib.sha256()
    for ref, v in zip(refs, values, strict=True):
        data = ref.get("bytes") if isinstance(ref, dict) else ref
        data = data or (ref.get("path") if isinstance(ref, dict) else None) or b""
        h.update(hashlib.sha256(data if isinstance(data, bytes) else str(data).encode()).digest())
        h.update(json.dumps(v, default=str).encode())
    return h.hexdigest()[:32]


def _empty(r: Resolved) -> DataError:
    return DataError(f"dataset {r.dataset_id!r} split {r.split!r} has no rows")


def _select_table(
    r: Resolved, image_column: str | None, label_column: str | None, max_samples: int | None, seed: int
) -> Selected:
    ds = r.dataset
    assert isinstance(ds, Dataset)
    n = len(ds)
    if n == 0:
        raise _empty(r)
    sample = ds.with_format("arrow")[:1].to_pylist()[0]
    img = _image_column(r, ds.features, image_column, sample, label_column)
    spec = _label_column(r, ds.features, label_column, img, sample)
    if spec.kind == "dense":  # masks are read with the images, not here (they are as large)
        keys = _keys(n, max_samples, seed)
        return Selected(_ArrowRefs(ds, img), keys, spec, [], torch.zeros(len(keys), dtype=torch.int64),
                        r.fingerprint or ds._fingerprint, _ArrowRefs(ds, spec.column))
    # The whole label column is read (labels are small) so that bad labels fail
    # deterministically and class ids do not depend on max_samples or the seed.
    values = ds.select_columns([spec.column]).with_format("arrow")[:].column(spec.column).to_pylist()
    C.validate_labels(spec, values, range(n))
    names = C.class_names(spec, values)
    if spec.label_kind != "regression":
        _check_label_space(names, r)
    if max_samples is not None and spec.label_kind == "single":
        present = len(set(values))
        if max_samples < present:
            raise DataError(
                f"max_samples={max_samples} is smaller than the {present} classes present; use at least {present}"
            )
    keys = _keys(n, max_samples, seed)
    labels = C.encode(spec, [values[k] for k in keys], names)
    return Selected(_ArrowRefs(ds, img), keys, spec, names, labels, r.fingerprint or ds._fingerprint)


def _image_column(r: Resolved, features: Any, image_column: str | None, sample: Any, label_column: str | None) -> str:
    try:
        return C.find_image_column(features, image_column, sample, label_column)
    except DataError as exc:
        if image_column is None and os.path.isdir(r.dataset_id) and list(features) == ["text"]:
            # datasets reads a folder of text files as a text dataset: there are no images to find.
            raise DataError(f"{r.dataset_id} holds text files, not images (datasets read them as a 'text' column); "
                            "pass a folder of image files, one subfolder per class") from exc
        raise


def _label_column(r: Resolved, features: Any, label_column: str | None, img: str, sample: Any) -> Any:
    try:
        return C.find_label_column(features, label_column, img, sample)
    except DataError as exc:
        if label_column is None and os.path.isdir(r.dataset_id) and list(features) == [img]:
            # An image folder without class subfolders: datasets gives it no label column.
            raise DataError(f"the images in {r.dataset_id} are not in class folders, so they have no labels; put each "
                            "class's images in its own subfolder (data/cat/*.png, data/dog/*.png), or pass a CSV "
                            "with an image and a label column") from exc
        raise


def _keys(n: int, max_samples: int | None, seed: int) -> np.ndarray:
    if max_samples is not None and max_samples < n:
        return np.sort(np.random.default_rng(seed).permutation(n)[:max_samples])
    return np.arange(n)


def _check_label_space(names: list[str], r: Resolved) -> None:
    if len(names) < 2:
        deeper = _class_tree_below(r.dataset_id)
        hint = f"; the class folders look like they are in {deeper}: pass that folder" if deeper else ""
        raise DataError(
            f"dataset {r.dataset_id!r} split {r.split!r} has {len(names)} class ({', '.join(names)}):"
            f" TASK2VEC needs a classification task with at least two classes{hint}"
        )


def _class_tree_below(root: str, depth: int = 4) -> str | None:
    """The first folder below ``root`` with two or more subfolders, following single-subfolder chains.

    ``data/train/{cat,dog}`` passed as ``data``: one "class" (``train``) whose folder holds the
    real classes. Only a chain of lone subfolders is followed (a few levels), so this names the
    tree the user meant without guessing between siblings.
    """
    path = root
    if not os.path.isdir(path):
        return None
    for _ in range(depth):
        try:
            subs = [e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
        except OSError:
            return None
        if len(subs) >= 2:
            return path if path != root else None
        if len(subs) != 1:
            return None
        path = subs[0]
    return None


def _select_stream(
    r: Resolved, image_column: str | None, label_column: str | None, max_samples: int | None, seed: int
) -> Selected:
    ids = r.dataset
    assert isinstance(ids, IterableDataset)
    if ids.features is None:
        ids = ids._resolve_features()  # reads one row to infer the types
    features = ids.features
    sample: dict[str, Any] = {}
    if image_column is None and not any(isinstance(f, Image) for f in features.values()):
        # Path columns are recognised by their values: peek at one row.
        sample = next(iter(ids.take(1)), {})
    img = _image_column(r, features, image_column, sample, label_column)
    spec = _label_column(r, features, label_column, img, sample)
    ids = ids.select_columns([img, spec.column])
    for column in (img, spec.column):
        if isinstance(features[column], Image):
            ids = ids.cast_column(column, Image(decode=False))
    if max_samples is not None:
        if spec.names is not None and spec.label_kind == "single" and max_samples < len(spec.names):
            raise DataError(
                f"max_samples={max_samples} is smaller than the {len(spec.names)} classes of {spec.column!r};"
                f" use at least {len(spec.names)}"
            )
        # Seeded buffer shuffle, then take: only about max_samples + buffer rows are read.
        ids = ids.shuffle(seed=seed, buffer_size=STREAM_SHUFFLE_BUFFER).take(max_samples)
    refs: list[Any] = []
    values: list[Any] = []
    for row in ids:
        refs.append(row[img])
        values.append(row[spec.column])
    if not refs:
        raise _empty(r)
    if spec.kind == "dense":
        fp = r.fingerprint or _content_fingerprint(refs + values, [None] * (2 * len(refs)))
        return Selected(_ListRefs(refs, img), np.arange(len(refs)), spec, [],
                        torch.zeros(len(refs), dtype=torch.int64), fp, _ListRefs(values, spec.column))
    C.validate_labels(spec, values, range(len(values)))
    names = C.class_names(spec, values)
    if spec.label_kind != "regression":
        _check_label_space(names, r)
    labels = C.encode(spec, values, names)
    fingerprint = r.fingerprint or _content_fingerprint(refs, values)
    return Selected(_ListRefs(refs, img), np.arange(len(refs)), spec, names, labels, fingerprint)
