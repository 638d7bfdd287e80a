"""Finding the image and label columns (by feature type) and encoding labels.

Detection goes by the ``datasets`` feature type, never by column name:
``Image`` is an image column, ``ClassLabel`` a single label, ``List(ClassLabel)``
(what ``Sequence(ClassLabel)`` becomes) a multi-label target. Without a
``ClassLabel``, exactly one integer/bool/string column is taken as the label, else
exactly one column of lists of integers/strings as a multi-label target;
without an ``Image``, exactly one string column holding image file names. Any
ambiguity is an error that lists the columns, never a guess.

Regression: a float ``Value`` column, or a list of floats with the same length
``k`` in every row, is a regression target (label kind ``"regression"``) when it
is the only candidate (no ClassLabel, no integer/string column) or is named by
``label_column``. Its values are encoded as an ``N x k`` matrix and standardised
per output dimension over the samples used (:func:`standardize`), because the
Fisher treats each output as the mean of a unit-variance Gaussian. NaN, inf and
missing targets are refused naming the first bad row; a constant target is
refused (it carries no task).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Array2D, Array3D, ClassLabel, Image, LargeList, List, Value

from ..errors import DataError

IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
)  # fmt: skip
_INT = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}
_STR = {"string", "large_string"}
_FLOAT = {"float16", "float32", "float64", "float", "double", "halffloat"}


def describe(features: Mapping[str, Any]) -> str:
    """``name (type), ...`` for error messages; ClassLabel names are summarised."""

    def one(f: Any) -> str:
        if isinstance(f, ClassLabel):
            return f"ClassLabel({f.num_classes} classes)"
        if isinstance(f, (List, LargeList)):
            return f"{type(f).__name__}({one(f.feature)})"
        if isinstance(f, Value):
            return f.dtype
        if isinstance(f, dict):
            return "struct{" + ", ".join(f"{k}: {one(v)}" for k, v in f.items()) + "}"
        return type(f).__name__

    return ", ".join(f"{name} ({one(f)})" for name, f in features.items()) or "none"


def _is_image_struct(f: Any) -> bool:
    # Untyped {"bytes", "path"} structs (e.g. a generator without features).
    return isinstance(f, dict) and "bytes" in f


def _looks_like_path(value: Any) -> bool:
    return isinstance(value, str) and value.lower().rsplit("?", 1)[0].endswith(IMAGE_EXTENSIONS)


def find_image_column(features: Mapping[str, Any], override: str | None, sample: Mapping[str, Any],
                      label_column: str | None = None) -> str:
    """The image column: ``override``, else the one ``Image`` column, else the one path-string column.

    ``sample`` is one row (undecoded) used to tell path strings from other strings;
    ``label_column`` (a mask, say) is never a candidate.
    """
    features = {n: f for n, f in features.items() if n != label_column}
    if override is not None:
        if override not in features:
            raise DataError(f"image_column {override!r} not found; columns: {describe(features)}")
        f = features[override]
        ok = (
            isinstance(f, Image)
            or _is_image_struct(f)
            or (isinstance(f, Value) and f.dtype in _STR | {"binary", "large_binary"})
        )
        if not ok:
            raise DataError(
                f"image_column {override!r} has type {describe({override: f})}; expected Image, file paths or bytes"
            )
        return override
    images = [n for n, f in features.items() if isinstance(f, Image) or _is_image_struct(f)]
    if not images:
        images = [
            n
            for n, f in features.items()
            if isinstance(f, Value) and f.dtype in _STR and _looks_like_path(sample.get(n))
        ]
    if len(images) == 1:
        return images[0]
    if not images:
        raise DataError(
            f"no image column (Image feature or image file paths); columns: {describe(features)}; pass image_column="
        )
    raise DataError(f"several image columns: {', '.join(images)}; pass image_column= to pick one")


@dataclass(frozen=True)
class LabelSpec:
    """How to read the label column.

    ``kind`` is classlabel, int, str or float (a regression target); ``multi`` for
    lists (multi-label classes, or a vector of ``k`` regression targets).
    """

    column: str
    kind: str
    multi: bool
    names: tuple[str, ...] | None = None  # ClassLabel names; None: derived from the values
    length: int | None = None  # float lists: the declared fixed length, if any

    @property
    def label_kind(self) -> str:
        if self.kind == "dense":
            return "dense"  # segmentation or dense_regression: known once a target is read (data/dense.py)
        if self.kind == "float":
            return "regression"
        return "multi" if self.multi else "single"


def _spec_for(name: str, f: Any) -> LabelSpec | None:
    """LabelSpec for a usable label feature (class labels or float targets), None otherwise."""
    multi = isinstance(f, (List, LargeList))
    inner = f.feature if multi else f
    if isinstance(inner, ClassLabel):
        return LabelSpec(name, "classlabel", multi, tuple(inner.names))
    if isinstance(inner, Value) and inner.dtype in _INT:
        return LabelSpec(name, "int", multi)
    if isinstance(inner, Value) and inner.dtype in _STR:
        return LabelSpec(name, "str", multi)
    if isinstance(inner, Value) and inner.dtype in _FLOAT:
        length = getattr(f, "length", -1) if multi else None
        return LabelSpec(name, "float", multi, None, length if length is not None and length > 0 else None)
    return None


def _depth(f: Any) -> int:
    return 1 + _depth(f.feature) if isinstance(f, (List, LargeList)) else 0


def _is_dense(f: Any, value: Any) -> bool:
    """A per-pixel target: an Image, image paths/bytes, a 2-D/3-D array or lists of lists of numbers."""
    if isinstance(f, (Image, Array2D, Array3D)) or _is_image_struct(f):
        return True
    if isinstance(f, Value) and (f.dtype in ("binary", "large_binary") or (f.dtype in _STR and _looks_like_path(value))):
        return True
    return _depth(f) >= 2


def _is_float(f: Any) -> bool:
    inner = f.feature if isinstance(f, (List, LargeList)) else f
    return isinstance(inner, Value) and inner.dtype in _FLOAT


def find_label_column(
    features: Mapping[str, Any], override: str | None, image_column: str, sample: Mapping[str, Any]
) -> LabelSpec:
    """The label column: ``override``, else the one ClassLabel (or list of), else the one int/str
    column, else the one float (or list of floats) column as a regression target."""
    if override is not None:
        if override not in features:
            raise DataError(f"label_column {override!r} not found; columns: {describe(features)}")
        f = features[override]
        if _is_dense(f, sample.get(override)):
            return LabelSpec(override, "dense", False)
        spec = _spec_for(override, f)
        if spec is None:
            raise DataError(
                f"label_column {override!r} has type {describe({override: f})};"
                " expected class labels, float regression targets, or a mask/map (Image or 2-D array)"
            )
        return spec
    rest = {n: f for n, f in features.items() if n != image_column}
    typed = [s for n, f in rest.items() if (s := _spec_for(n, f)) is not None and s.kind == "classlabel"]
    if len(typed) == 1:
        return typed[0]
    if len(typed) > 1:
        names = ", ".join(s.column for s in typed)
        raise DataError(f"several ClassLabel columns: {names}; pass label_column= to pick one")
    # Plain scalar ints/strings; strings that are image paths are not labels.
    plain = [
        s
        for n, f in rest.items()
        if (s := _spec_for(n, f)) is not None
        and s.kind in ("int", "str")
        and not s.multi
        and not (s.kind == "str" and _looks_like_path(sample.get(n)))
    ]
    if len(plain) == 1:
        return plain[0]
    # A list of integer or string classes per row: a multi-label target.
    lists = [s for n, f in rest.items() if (s := _spec_for(n, f)) is not None and s.kind in ("int", "str") and s.multi]
    floats = [s for n, f in rest.items() if _is_float(f) and (s := _spec_for(n, f)) is not None]
    if not plain and len(lists) == 1 and not floats:
        return lists[0]
    # No class label at all: the one float (or list of floats) column is a regression target.
    if not plain and not lists and len(floats) == 1:
        return floats[0]
    if plain or lists:
        what = "several candidate label columns"
    elif floats:
        what = f"several candidate regression target columns ({', '.join(s.column for s in floats)})"
    else:
        what = "no label column (ClassLabel, integer, string or float target)"
    raise DataError(f"{what}; columns: {describe(features)}; pass label_column=")


def _bad_label(row: int, value: Any, why: str) -> DataError:
    return DataError(f"row {row}: label {value!r} {why}; fix or drop that row (Dataset.filter) first")


def _finite(x: Any) -> bool:
    try:
        return x is not None and not isinstance(x, (str, bytes)) and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _validate_targets(spec: LabelSpec, values: Sequence[Any], rows: Sequence[int]) -> None:
    """Regression targets: finite numbers, lists of one length; the first bad row is named."""

    def bad(row: int, value: Any, why: str) -> DataError:
        return DataError(
            f"row {row}: regression target {value!r} of column {spec.column!r} {why};"
            " fix or drop that row (Dataset.filter) first"
        )

    k = spec.length
    for row, v in zip(rows, values, strict=True):
        if spec.multi:
            if not isinstance(v, (list, tuple)):
                raise bad(row, v, "is missing" if v is None else "is not a list")
            if not v:
                raise bad(row, v, "is an empty list")
            if not all(_finite(x) for x in v):
                raise bad(row, v, "holds a value that is not a finite number (NaN, inf or missing)")
            if k is None:
                k = len(v)
            elif len(v) != k:
                raise bad(row, v, f"has {len(v)} values where earlier rows have {k}; every row needs {k}")
        elif not _finite(v):
            raise bad(row, v, "is missing" if v is None else "is not a finite number")


def validate_labels(spec: LabelSpec, values: Sequence[Any], rows: Sequence[int]) -> None:
    """Refuse None labels and ClassLabel ids out of range (non-finite regression targets), naming the first bad row."""
    if spec.kind == "float":
        _validate_targets(spec, values, rows)
        return
    n = len(spec.names) if spec.names is not None else None
    for row, v in zip(rows, values, strict=True):
        items = v if spec.multi else [v]
        if v is None or (spec.multi and not isinstance(v, (list, tuple))):
            raise _bad_label(row, v, "is missing" if v is None else "is not a list")
        for x in items:
            if x is None:
                raise _bad_label(row, v, "is missing")
            if n is not None and not (0 <= int(x) < n):
                why = (
                    "means 'no label' (-1)" if int(x) == -1 else f"is outside the ClassLabel range 0..{n - 1}"
                )
                raise _bad_label(row, v, why)


def class_names(spec: LabelSpec, values: Sequence[Any]) -> list[str]:
    """ClassLabel names, or the sorted distinct values (as strings) of ``values``.

    Regression: one name per output dimension, ``column`` (scalar targets) or
    ``column[i]`` (lists of ``k`` floats; ``values`` already validated).
    """
    if spec.kind == "float":
        if not spec.multi:
            return [spec.column]
        k = spec.length or (len(values[0]) if len(values) else 0)
        return [f"{spec.column}[{i}]" for i in range(k)]
    if spec.names is not None:
        return list(spec.names)
    flat = {x for v in values for x in v} if spec.multi else set(values)
    names = [str(x) for x in sorted(flat)]
    _warn_near_duplicates(spec.column, names)
    return names


def _warn_near_duplicates(column: str, names: list[str]) -> None:
    """Say so when class names differ only in case or surrounding spaces (``cat`` / `` cat`` / ``Cat``).

    They are kept as distinct classes (the data says so), but a CSV typo silently splitting one
    class in two changes the task, so the user hears about it once.
    """
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(n.strip().casefold(), []).append(n)
    clashes = [g for g in groups.values() if len(g) > 1]
    if clashes:
        import warnings

        shown = "; ".join(" / ".join(repr(n) for n in g) for g in clashes[:3])
        more = f" (and {len(clashes) - 3} more)" if len(clashes) > 3 else ""
        warnings.warn(f"label column {column!r}: {shown}{more} differ only in case or surrounding spaces and are "
                      "taken as different classes; if each group is one class, clean the column", UserWarning,
                      stacklevel=3)


def encode(spec: LabelSpec, values: Sequence[Any], names: list[str]) -> torch.Tensor:
    """int64 class ids (single), a float multi-hot N x C matrix (multi), or for regression
    the raw float64 N x k targets (standardise them with :func:`standardize`)."""
    if spec.kind == "float":
        raw = torch.tensor(
            [[float(x) for x in v] if spec.multi else [float(v)] for v in values], dtype=torch.float64
        )
        return raw.reshape(len(values), len(names))
    if spec.names is not None:
        ids: list[list[int]] | list[int] = (
            [[int(x) for x in v] for v in values] if spec.multi else [int(v) for v in values]
        )
    else:
        index = {name: i for i, name in enumerate(names)}
        ids = [[index[str(x)] for x in v] for v in values] if spec.multi else [index[str(v)] for v in values]
    if not spec.multi:
        return torch.tensor(ids, dtype=torch.int64)
    out = torch.zeros(len(values), len(names), dtype=torch.float32)
    for i, row in enumerate(ids):
        if row:
            out[i, torch.tensor(row, dtype=torch.int64)] = 1.0
    return out


def standardize(raw: torch.Tensor, column: str) -> tuple[torch.Tensor, list[float], list[float]]:
    """Regression targets ``raw`` (N x k) -> (float32 standardised targets, means, stds).

    Each output dimension has its mean subtracted and is divided by its standard
    deviation (population, over these N samples): the Gaussian likelihood of the
    Fisher has unit variance, so the targets must be on that scale. A target that
    is constant over the samples (in any dimension) carries no task and is refused,
    as are fewer than 2 samples.
    """
    n = int(raw.shape[0])
    if n < 2:
        raise DataError(f"regression target {column!r} has {n} sample; TASK2VEC needs at least 2 samples")
    raw = raw.to(torch.float64).reshape(n, -1)
    constant = (raw.max(0).values == raw.min(0).values).nonzero().flatten().tolist()
    if constant:
        j = constant[0]
        where = f" (dimension {j})" if raw.shape[1] > 1 else ""
        raise DataError(
            f"regression target {column!r}{where} is constant ({float(raw[0, j])!r}) over the {n} samples used:"
            " a constant target carries no task"
        )
    mean = raw.mean(0)
    std = raw.std(0, correction=0)
    if not bool(torch.isfinite(std).all() and (std > 0).all()):
        raise DataError(
            f"regression target {column!r} has values too large to standardise; rescale them first"
        )
    z = ((raw - mean) / std).to(torch.float32)
    return z, [float(m) for m in mean], [float(s) for s in std]


def present_classes(labels: torch.Tensor) -> int:
    """Number of classes with at least one sample (single) or one positive (multi)."""
    if labels.ndim == 1:
        return int(torch.unique(labels).numel())
    return int((labels.sum(0) > 0).sum().item())


def names_json(names: list[str]) -> str:
    return json.dumps(names, ensure_ascii=False)
