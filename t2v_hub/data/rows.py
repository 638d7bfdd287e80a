"""Preprocessed images that are normalised batch by batch, and a decode cache that can live on disk.

The pipeline reads a task's images in batches (features, then the Fisher pass). Holding them
as one float32 ``N x 3 x H x W`` tensor costs 4 bytes per pixel for the whole task at once
(100k images at 224 px: 60 GB); :class:`ImageRows` keeps the decoded uint8 crops (1 byte per
pixel) and normalises only the rows a batch asks for. Above
:data:`~t2v_hub.constants.DECODE_RAM_BYTES` the uint8 cache itself goes to a file-backed
tensor in the cache folder (:func:`uint8_cache`), so RAM holds a batch, not the task. The file
is unlinked as soon as it is mapped: nothing is left behind, whatever happens to the process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["ImageRows", "as_rows", "take_rows", "uint8_cache"]


class ImageRows:
    """``N`` images, as a tensor would give them: ``rows[i:j]`` / ``rows[index]`` are float batches.

    ``store``: uint8 crops (normalised on access by ``normalize``) or an already normalised
    float tensor (``normalize=None``). ``index``: which rows of ``store`` this view holds, in
    order (None: all). :meth:`select` makes a sub-view without reading anything.
    """

    def __init__(self, store: Tensor, normalize: Callable[[Tensor], Tensor] | None = None,
                 index: Tensor | None = None) -> None:
        self.store, self.normalize, self.index = store, normalize, index
        n = int(store.shape[0]) if index is None else int(index.numel())
        self.shape = torch.Size((n, *store.shape[1:]))

    def __len__(self) -> int:
        return int(self.shape[0])

    def select(self, idx: Tensor) -> ImageRows:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ImageRows(self.store, self.normalize, idx if self.index is None else self.index[idx])

    def __getitem__(self, key: Any) -> Tensor:
        if isinstance(key, slice):
            part = self.store[key] if self.index is None else self.store[self.index[key]]
        else:
            key = torch.as_tensor(key, dtype=torch.long)
            part = self.store[key if self.index is None else self.index[key]]
        return self.normalize(part) if self.normalize is not None else part

    def materialize(self) -> Tensor:
        """All rows as one float tensor (what :meth:`TaskData.tensors` returns)."""
        return self[:]


def as_rows(images: Tensor | ImageRows) -> ImageRows:
    return images if isinstance(images, ImageRows) else ImageRows(images)


def take_rows(images: Tensor | ImageRows, rows: Tensor) -> Tensor | ImageRows:
    """``images[rows]`` without reading a view's pixels (a plain tensor is indexed as usual)."""
    return images.select(rows) if isinstance(images, ImageRows) else images[rows]


def uint8_cache(shape: tuple[int, ...], ram_limit: int, folder: str | Callable[[], str]) -> Tensor:
    """An uninitialised uint8 tensor: in RAM up to ``ram_limit`` bytes, else backed by a file.

    The file (under ``folder``, or the folder that callable returns, asked only when a file is
    needed) is unlinked right after it is mapped, so the kernel frees it
    with the mapping; pages are written back to it, not held in RAM, when memory is short.
    """
    nbytes = 1
    for d in shape:
        nbytes *= int(d)
    if nbytes <= ram_limit:
        return torch.empty(shape, dtype=torch.uint8)
    folder = folder() if callable(folder) else folder
    os.makedirs(folder, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="decoded-", suffix=".u8", dir=folder)
    try:
        os.ftruncate(fd, nbytes)
        store = torch.from_file(path, shared=True, size=nbytes, dtype=torch.uint8)
    finally:
        os.close(fd)
        os.unlink(path)
    return store.view(shape)
