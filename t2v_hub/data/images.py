"""Image decoding: any stored image reference -> the probe's eval crop as uint8 CHW.

Decisions (each one is a choice TASK2VEC leaves open; they are fixed here so that
two runs on the same files give the same tensors):

- **Alpha** (RGBA, LA, PA, palette or L/RGB with a transparency key) is
  *composited on white*. Transparent pixels are background in the datasets that
  use alpha (icons, product shots, sketches); dropping alpha instead exposes
  whatever colour the encoder left under them, often black or noise.
- **16/32-bit greyscale** (I;16*, I) is scaled to 8 bits by /257 (65535 -> 255);
  an ``I`` image whose values already fit in 0..255 is kept as is. ``F`` images
  in 0..1 are scaled by 255, otherwise clipped. PIL's own ``convert`` clips
  16-bit values, which would turn most 16-bit images white.
- **CMYK, YCbCr, 1-bit, palette**: PIL's ``convert("RGB")``.
- **EXIF orientation** is applied, so phone photos are upright as displayed.
- **Size**: the probe's eval transform (timm ``create_transform(is_training=False)``)
  does the resize and crop. 1x1 images are accepted and upscaled by it.
- **Large images**: JPEGs are decoded with ``Image.draft`` at the smallest DCT
  scale whose shorter side still covers the transform's resize target, which is
  both faster and bounds memory. Any image whose header claims more than
  :data:`MAX_PIXELS` pixels, in any format, is refused with
  :class:`ImageTooLargeError` before its pixels are decoded (drafting does not
  exempt a JPEG: a 600-byte file can claim 65500x65500); PIL's
  ``DecompressionBombError`` is turned into the same error.
- The cache stores the crop as uint8 (a quarter of float32's memory); mean/std
  normalisation is applied when tensors are handed out, which is bit-for-bit
  what timm's ``ToTensor`` + ``Normalize`` computes.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from ..errors import BadImageError, ImageTooLargeError

# 2**28 pixels is a 16384x16384 image: ~800 MB as RGB, the most we accept to
# decode one sample. Module-level so that callers (and tests) can change it.
MAX_PIXELS: int = 2**28

_JPEG_MAGIC = b"\xff\xd8\xff"
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WIDE_GREY_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# The keys of timm's data config that change the eval transform.
_CFG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def read_bytes(ref: Any, base_dir: str | None = None, token: str | bool | None = None) -> bytes:
    """The encoded bytes behind a stored image reference.

    ``ref`` is what a dataset holds without decoding: ``{"bytes", "path"}``
    (the ``Image`` feature's storage), a path string, raw bytes or a PIL image.
    Relative paths are resolved against ``base_dir`` (the csv's folder).
    """
    if isinstance(ref, Image.Image):
        buf = io.BytesIO()
        ref.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(ref, (bytes, bytearray, memoryview)):
        return bytes(ref)
    path: str | None
    if isinstance(ref, Mapping):
        if ref.get("bytes"):
            return bytes(ref["bytes"])
        path = ref.get("path")
    elif isinstance(ref, (str, os.PathLike)):
        path = os.fspath(ref)
    elif ref is None:
        raise BadImageError("no image (missing value)")
    else:
        raise BadImageError(f"unsupported image value of type {type(ref).__name__}")
    if not path:
        raise BadImageError("no image (empty bytes and path)")
    if "://" in path and not path.startswith("file://"):
        # Remote files of streamed Hub datasets: datasets' own opener knows
        # hf:// URLs, the endpoint and the token.
        from datasets import DownloadConfig
        from datasets.utils.file_utils import xopen

        try:
            with xopen(path, "rb", download_config=DownloadConfig(token=token)) as fh:
                return fh.read()
        except ImportError as e:  # fsspec's http needs extras that datasets does not require
            raise BadImageError(f"{path}: reading images over http(s) needs `pip install aiohttp requests` "
                                f"({e}); or download the images and list local paths") from None
    path = path.removeprefix("file://")
    if base_dir and not os.path.isabs(path):
        path = os.path.join(base_dir, path)
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise BadImageError(f"cannot read {path}: {e.strerror or e}") from None


def _open(data: bytes, min_side: int) -> Image.Image:
    """Open lazily, draft JPEGs down to ``min_side``, and enforce the pixel bound."""
    if data[:3] == _JPEG_MAGIC:
        im: Image.Image = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
        w, h = im.size
        # The one pixel bound, on the size the header claims, before anything is decoded: a
        # 600-byte JPEG can claim 65500x65500, and drafting it still decodes 67M pixels.
        _check_pixels(w, h)
        short = min(w, h)
        if short > min_side:
            # draft() keeps the result >= the requested size, so the transform
            # still downsamples (never upsamples) the drafted image.
            req = (math.ceil(w * min_side / short), math.ceil(h * min_side / short))
            im.draft(im.mode if im.mode in ("RGB", "L") else None, req)
    else:
        try:
            with warnings.catch_warnings():
                # Our own bound below replaces PIL's warning threshold.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as e:
            raise ImageTooLargeError(f"image too large for PIL's decompression-bomb limit: {e}") from None
        except UnidentifiedImageError:
            # PIL's own message names an io.BytesIO object, which tells the user nothing.
            what = "an empty file" if not data else f"{len(data)} bytes starting {data[:8]!r}"
            raise BadImageError(f"not an image PIL can read ({what})") from None
    w, h = im.size
    _check_pixels(w, h)
    if w < 1 or h < 1:
        raise BadImageError(f"image has an empty size {w}x{h}")
    return im


def displayed_size(data: bytes) -> tuple[int, int]:
    """(width, height) as displayed: the header's size, swapped when EXIF rotates by 90 degrees."""
    im = Image.open(io.BytesIO(data))
    w, h = im.size
    with contextlib.suppress(Exception):  # a broken EXIF block means no rotation, as in decoding
        if im.getexif().get(0x0112) in (5, 6, 7, 8):
            return h, w
    return w, h


def _check_pixels(w: int, h: int) -> None:
    if w * h > MAX_PIXELS:
        raise ImageTooLargeError(
            f"image is {w}x{h} = {w * h} pixels, above the {MAX_PIXELS}-pixel bound"
            " (raise t2v_hub.data.images.MAX_PIXELS or downscale the file)"
        )


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB, following the module's documented decisions."""
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode in _WIDE_GREY_MODES or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if mode in _WIDE_GREY_MODES or arr.max(initial=0) > 255:
            arr = arr / 257.0
        im = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
        return im.convert("RGB")
    if mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if arr.size and np.nanmax(arr) <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr, nan=0.0)
        return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return im.convert("RGB")


def normalise_cfg(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The transform-relevant part of a timm data config, JSON-friendly."""
    if "input_size" not in cfg:
        raise ValueError("transform_cfg needs 'input_size' (use timm.data.resolve_model_data_config(model))")
    out: dict[str, Any] = {}
    for k in _CFG_KEYS:
        if k in cfg and cfg[k] is not None:
            v = cfg[k]
            out[k] = (
                [float(x) if k in ("mean", "std") else int(x) for x in v]
                if isinstance(v, (tuple, list))
                else v
            )
    size = out["input_size"]
    if isinstance(size, int):
        out["input_size"] = [3, size, size]
    elif len(size) == 2:
        out["input_size"] = [3, *size]
    return out


class Preprocessor:
    """Decode + eval transform for one timm data config. Picklable (runs in DataLoader workers)."""

    def __init__(self, transform_cfg: Mapping[str, Any]) -> None:
        from timm.data import create_transform
        from timm.data.constants import DEFAULT_CROP_PCT, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

        self.cfg = normalise_cfg(transform_cfg)
        _, h, w = self.cfg["input_size"]
        self.size = (int(h), int(w))
        crop_pct = float(self.cfg.get("crop_pct") or DEFAULT_CROP_PCT)
        # timm resizes to floor(size / crop_pct) before cropping; drafting must
        # keep the shorter side at least that big in every crop mode.
        self.min_side = max(math.floor(h / crop_pct), math.floor(w / crop_pct))
        mean = self.cfg.get("mean", IMAGENET_DEFAULT_MEAN)
        std = self.cfg.get("std", IMAGENET_DEFAULT_STD)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # use_prefetcher=True: the same resize/crop ending in a uint8 CHW tensor.
        self._tf = create_transform(**self.cfg, is_training=False, use_prefetcher=True)

    @property
    def key(self) -> str:
        return json.dumps(self.cfg, sort_keys=True)

    def __call__(self, data: bytes) -> torch.Tensor:
        im = _open(data, self.min_side)
        im.load()
        # A broken EXIF block must not lose an otherwise good image.
        with contextlib.suppress(Exception):
            im = ImageOps.exif_transpose(im) or im
        out = self._tf(to_rgb(im))
        if not isinstance(out, torch.Tensor):
            out = torch.as_tensor(np.asarray(out))
        if out.dtype != torch.uint8 or tuple(out.shape) != (3, *self.size):
            raise BadImageError(
                f"transform produced {tuple(out.shape)} {out.dtype}, expected (3, {self.size})"
            )
        return out

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float32 normalised, as timm's ToTensor + Normalize."""
        return (x.to(torch.float32).div_(255.0) - self.mean) / self.std
