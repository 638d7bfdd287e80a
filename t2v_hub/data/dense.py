"""Dense targets (supplement 1.1): a segmentation mask or a float map per image.

A dense label column is named explicitly (``label_column="mask"``); it is never
guessed, because a second image column is as likely a second view as a target.
It holds an ``Image`` (or image file paths/bytes) or an array (nested lists,
``Array2D``/``Array3D``) of the input image's spatial size, row by row.

Decisions:

- **Kind**, from what is stored: integer arrays and 1-bit/8-bit/palette images
  (modes ``1``, ``L``, ``P``) are class masks (``label_kind="segmentation"``,
  a per-pixel softmax); float arrays and float or 16/32-bit images (``F``,
  ``I``, ``I;16``: how depth maps are usually stored) are float maps
  (``"dense_regression"``, a unit-variance Gaussian per pixel). RGB(A) images are
  refused: colour-coded masks need their palette mapped to class ids first.
- **Class ids**: the distinct stored values, sorted, become 0..C-1 (so 0/255
  binary masks are two classes), recorded in ``label_names``, as plain integer
  labels are. More than :data:`MAX_MASK_CLASSES` distinct values is refused (a float
  map stored as integers, most likely).
- **Float maps** are standardised per channel over every pixel of the samples used
  (mean and std kept in metadata), for the same reason scalar targets are.
- **Geometry**: a target goes through exactly the probe's resize and crop (timm's
  eval transform), with nearest-exact sampling for class masks and bilinear for
  float maps, so that target pixel (i, j) is the label of input pixel (i, j). Pixels
  padded by ``crop_mode="border"`` get 0.
- **Size**: each target must have its image's displayed size (after EXIF rotation);
  anything else is refused naming the row, because resizing a mismatched mask would
  silently misalign every label.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from ..errors import DataError
from .images import Preprocessor, _open, displayed_size, read_bytes

MAX_MASK_CLASSES = 1000
_CLASS_MODES = {"1", "L", "P"}
_FLOAT_MODES = {"F", "I", "I;16", "I;16L", "I;16B", "I;16N"}
DENSE_KINDS = ("segmentation", "dense_regression")


def _is_array(value: Any) -> bool:
    return isinstance(value, (list, tuple, np.ndarray))


def target_array(value: Any, base_dir: str | None = None, token: Any = None,
                 expect: tuple[int, int] | None = None) -> np.ndarray:
    """One stored target -> an ``(H, W)`` or ``(H, W, k)`` numpy array, as stored.

    Images are opened with the image path's own pixel bound (a 600-byte PNG can claim
    65500 x 65500), and ``expect`` (width, height) is checked on the header, before any
    pixel is decoded.
    """
    if _is_array(value):
        arr = np.asarray(value)
        if arr.dtype == object:
            raise DataError("a dense target holds rows of different lengths; every row of the array must match")
        return arr
    im = _open(read_bytes(value, base_dir, token), min_side=1 << 30)  # no JPEG drafting: sizes must stay
    if expect is not None and im.size != expect:
        raise _size_error(im.size, expect)
    if im.mode not in _CLASS_MODES | _FLOAT_MODES:
        raise DataError(
            f"a dense target is a {im.mode} image; masks must be single-channel class ids (mode L, P or 1)"
            " and float maps single-channel (mode F, I or I;16): map colour-coded masks to class ids first"
        )
    arr = np.asarray(im)
    return arr.astype(np.float32) if im.mode in _FLOAT_MODES else arr.astype(np.int64)


def kind_of(arr: np.ndarray) -> str:
    """``segmentation`` for integer (or bool) values, ``dense_regression`` for floats."""
    if arr.ndim not in (2, 3):
        raise DataError(f"a dense target must be H x W (or H x W x k for float maps), got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        return "dense_regression"
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if arr.ndim == 3:
            raise DataError(f"a class mask must be H x W, got shape {arr.shape}; several channels need float maps")
        return "segmentation"
    raise DataError(f"a dense target holds {arr.dtype} values; expected integer class ids or floats")


class TargetTransform:
    """The probe's eval resize/crop for targets (nearest-exact for classes, bilinear for floats)."""

    def __init__(self, pre: Preprocessor, kind: str) -> None:
        # torchvision on first use: importing it costs ~1.5 s (it pulls in torch._dynamo), which
        # commands that never resize a target map (recommend from a file, distance) must not pay.
        from torchvision.transforms import InterpolationMode

        mode = InterpolationMode.NEAREST_EXACT if kind == "segmentation" else InterpolationMode.BILINEAR
        self.steps = []
        for t in pre._tf.transforms[:-1]:  # the last step is the PIL -> uint8 tensor conversion
            t = copy.deepcopy(t)
            if hasattr(t, "interpolation"):
                t.interpolation = mode
            if hasattr(t, "fill"):
                t.fill = 0  # crop_mode="border" pads with the RGB mean, meaningless for a target
            self.steps.append(t)
        self.kind = kind
        self.size = pre.size

    def __call__(self, arr: np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(np.ascontiguousarray(arr), dtype=torch.float64 if self.kind == "segmentation" else
                            torch.float32)
        x = x[None] if x.dim() == 2 else x.permute(2, 0, 1)
        for t in self.steps:
            x = t(x)
        return x[0].round().to(torch.int64) if self.kind == "segmentation" else x.to(torch.float32)


class _SizeMismatch(DataError):
    pass


def _size_error(got: tuple[int, int], want: tuple[int, int]) -> DataError:
    return _SizeMismatch(f"is {got[0]}x{got[1]} but its image is {want[0]}x{want[1]};"
                         " a mask or map must have its image's size (width x height)")


def target_array_of_row(value: Any, row: int, column: str, base_dir: str | None, token: Any,
                        expect: tuple[int, int] | None = None) -> np.ndarray:
    """:func:`target_array`, with any failure named by row and column; the kind is checked too."""
    try:
        arr = target_array(value, base_dir, token, expect)
        if expect is not None and arr.shape[:2] != (expect[1], expect[0]):
            raise _size_error((arr.shape[1], arr.shape[0]), expect)
        kind_of(arr)
    except _SizeMismatch as e:
        raise DataError(f"row {row}: dense target {column!r} {e}") from None
    except DataError as e:
        raise DataError(f"row {row}: {column!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - decoders raise anything on corrupt input
        raise DataError(f"row {row}: dense target {column!r} cannot be read ({type(e).__name__}: {e});"
                        " fix or drop that row first") from None
    return arr


def decode_target(value: Any, image_ref: Any, row: int, column: str, tf: TargetTransform,
                  base_dir: str | None, token: Any) -> torch.Tensor:
    """One row's target, size-checked against its image and transformed like it."""
    size = displayed_size(read_bytes(image_ref, base_dir, token))
    arr = target_array_of_row(value, row, column, base_dir, token, expect=size)
    kind = kind_of(arr)
    if kind != tf.kind:
        raise DataError(
            f"row {row}: dense target {column!r} holds {kind} values where earlier rows hold {tf.kind} ones;"
            " every row must store the same kind"
        )
    return tf(arr)


def encode_segmentation(masks: torch.Tensor, column: str) -> tuple[torch.Tensor, list[str]]:
    """Stored class values ``(N, H, W)`` -> contiguous ids 0..C-1 and the values as names."""
    values, ids = torch.unique(masks, return_inverse=True)
    if values.numel() > MAX_MASK_CLASSES:
        raise DataError(
            f"dense target {column!r} has {values.numel()} distinct values, more than {MAX_MASK_CLASSES} classes;"
            " a float map should be stored as floats (mode F or a float array)"
        )
    if values.numel() < 2:
        raise DataError(
            f"dense target {column!r} has one value ({int(values[0])}) in every pixel of the samples used:"
            " TASK2VEC needs at least two classes"
        )
    return ids.reshape(masks.shape), [str(int(v)) for v in values]


def standardize_maps(maps: torch.Tensor, column: str) -> tuple[torch.Tensor, list[float], list[float]]:
    """Float maps ``(N, k, H, W)`` standardised per channel over all pixels; constant or non-finite ones refused."""
    if not bool(torch.isfinite(maps).all()):
        bad = int((~torch.isfinite(maps)).flatten(1).any(1).nonzero()[0])
        raise DataError(f"sample {bad}: dense target {column!r} holds NaN or inf; fix or drop that row first")
    flat = maps.transpose(0, 1).reshape(maps.shape[1], -1).double()
    mean, std = flat.mean(1), flat.std(1, correction=0)
    if bool((std == 0).any()):
        raise DataError(f"dense target {column!r} is constant over the samples used: a constant map carries no task")
    z = (maps - mean.float()[None, :, None, None]) / std.float()[None, :, None, None]
    return z, [float(m) for m in mean], [float(s) for s in std]
