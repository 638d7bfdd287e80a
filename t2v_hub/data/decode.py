"""Decoding the selected images of a task: undecoded references, and the map-style dataset that decodes them.

One item is one image (or its error); a DataLoader batches them (``DECODE_BATCH``)
so decoding can run in worker processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..errors import BadImageError, ImageTooLargeError
from .images import Preprocessor, read_bytes

# Streaming: rows are shuffled through a buffer of this many before taking max_samples.

# Images per DataLoader item; large enough to amortise IPC, small enough for a smooth progress bar.
DECODE_BATCH = 16


class _ArrowRefs:
    """Undecoded image values of one column, read through Arrow (no PIL decode, no cast)."""

    def __init__(self, ds: Dataset, column: str) -> None:
        self.ds = ds.select_columns([column]).with_format("arrow")
        self.column = column

    def get(self, keys: list[int]) -> list[Any]:
        return self.ds[keys].column(self.column).to_pylist()


class _ListRefs:
    """Undecoded image values already read (streaming)."""

    def __init__(self, items: list[Any], column: str) -> None:
        self.items = items
        self.column = column

    def get(self, keys: list[int]) -> list[Any]:
        return [self.items[k] for k in keys]


Refs = _ArrowRefs | _ListRefs
# (position, uint8 image or None, error message or None, too large?)
Decoded = tuple[int, torch.Tensor | None, str | None, bool]


class _DecodeSet(torch.utils.data.Dataset):
    """Map-style dataset over the selected rows; one item = one decoded image or its error."""

    def __init__(
        self, refs: Refs, keys: np.ndarray, pre: Preprocessor, base_dir: str | None, token: Any
    ) -> None:
        self.refs, self.keys, self.pre, self.base_dir, self.token = refs, keys, pre, base_dir, token

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, pos: int) -> Decoded:
        return self.__getitems__([pos])[0]

    def __getitems__(self, positions: list[int]) -> list[Decoded]:
        # One Arrow read per batch instead of one per image.
        values = self.refs.get([int(self.keys[p]) for p in positions])
        out: list[Decoded] = []
        for pos, ref in zip(positions, values, strict=True):
            try:
                out.append((pos, self.pre(read_bytes(ref, self.base_dir, self.token)), None, False))
            except Exception as e:  # noqa: BLE001 - decoders raise anything on corrupt input
                msg = str(e) if isinstance(e, BadImageError) else f"{type(e).__name__}: {e}"
                where = _path_of(ref)
                if where and where not in msg:  # the file to look at, where the row has one
                    msg = f"{where}: {msg}"
                out.append((pos, None, msg, isinstance(e, ImageTooLargeError)))
        return out


def _path_of(ref: Any) -> str | None:
    path = ref.get("path") if isinstance(ref, dict) else ref if isinstance(ref, str) else None
    return str(path) if path else None


def _as_list(batch: list[Decoded]) -> list[Decoded]:
    return batch


