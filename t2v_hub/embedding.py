"""The embedding artifact: a per-filter vector plus provenance, stored as safetensors.

File layout: one fp32 tensor ``embedding`` of shape (dim,), and the safetensors
``__metadata__`` (string -> string) carrying every setting that produced it.
Comparability is decided by a fixed set of fields (``COMPAT_FIELDS``): two
embeddings live in the same space only if probe, weights, layout and method agree.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from .config import check_path
from .constants import FORMAT_VERSION
from .errors import EmbeddingError, IncompatibleEmbeddingError, OutputError

TENSOR_KEY = "embedding"
# Fields that must agree for two embeddings to be comparable, in the order reported.
COMPAT_FIELDS = ("probe", "weights_sha256", "layout_hash", "dim", "method")
REQUIRED_FIELDS = ("format_version", *COMPAT_FIELDS)
# Compared only when both embeddings record them (older or hand-made files may not).
OPTIONAL_COMPAT_FIELDS = ("input_size", "include_norm")


def _versions() -> dict[str, str]:
    import timm

    from .version import __version__

    return {"t2v_hub_version": __version__, "torch_version": torch.__version__, "timm_version": timm.__version__}


def first_space_difference(a: Mapping[str, str], b: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The first embedding-space field where metadata ``a`` and ``b`` differ, with both values.

    ``COMPAT_FIELDS`` must agree; ``OPTIONAL_COMPAT_FIELDS`` only where both record them.
    """
    for f in COMPAT_FIELDS + OPTIONAL_COMPAT_FIELDS:
        x, y = a.get(f, ""), b.get(f, "")
        if f in OPTIONAL_COMPAT_FIELDS and (not x or not y):
            continue
        if x != y:
            return f, x, y
    return None


@dataclass
class Task2VecEmbedding:
    """A TASK2VEC embedding: ``vector`` (fp32, one entry per probe filter) and ``metadata``."""

    vector: torch.Tensor
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            raw = torch.as_tensor(self.vector)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise EmbeddingError(f"vector={type(self.vector).__name__}: expected a 1-D tensor of numbers ({exc})") from None
        if raw.dim() > 1 and sum(n > 1 for n in raw.shape) > 1:  # (1, dim) from a batch is fine; (3, 4) is not one
            raise EmbeddingError(f"vector has shape {tuple(raw.shape)}: expected one entry per probe filter, a 1-D "
                                 "tensor (stack several embeddings with t2v_hub.embedding.stack, not in one)")
        v = raw.detach().to("cpu", torch.float32).reshape(-1).contiguous()
        check_vector(v, "embedding vector")
        self.vector = v
        if self.metadata is None:
            self.metadata = {}
        if not isinstance(self.metadata, Mapping):
            raise EmbeddingError(f"metadata={type(self.metadata).__name__}: expected a dict of str to str")
        self.metadata = {str(k): _to_str(val) for k, val in self.metadata.items()}
        self.metadata.setdefault("format_version", FORMAT_VERSION)
        self.metadata["dim"] = str(v.numel())

    # -- construction -------------------------------------------------------------
    @classmethod
    def create(cls, vector: torch.Tensor, **fields: Any) -> Task2VecEmbedding:
        """Build with provenance: library versions and creation time are added."""
        meta: dict[str, Any] = {**_versions(), "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        meta.update(fields)
        return cls(vector, meta)

    # -- accessors ----------------------------------------------------------------
    @property
    def dim(self) -> int:
        return int(self.vector.numel())

    @property
    def probe(self) -> str:
        return self.metadata.get("probe", "")

    @property
    def method(self) -> str:
        return self.metadata.get("method", "")

    @property
    def norm(self) -> float:
        return float(self.vector.norm())

    def config(self, key: str) -> Any:
        """A metadata value decoded from JSON where it was JSON-encoded."""
        raw = self.metadata[key]
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw

    def compat_key(self) -> tuple[str, ...]:
        return tuple(self.metadata.get(f, "") for f in COMPAT_FIELDS)

    def check_compatible(self, other: Task2VecEmbedding) -> None:
        """Raise :class:`IncompatibleEmbeddingError` naming the first field that differs."""
        diff = first_space_difference(self.metadata, other.metadata)
        if diff is not None:
            f, a, b = diff
            raise IncompatibleEmbeddingError(
                f"embeddings differ in {f}: {a!r} vs {b!r}; recompute one of them with the other's {f}"
            )

    # -- serialisation --------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """safetensors bytes that depend only on the content.

        ``safetensors.save`` writes ``__metadata__`` in hash-map order, which changes
        from call to call; a sorted JSON header makes sha256, cache keys and "nothing
        changed" checks stable. The result is a standard safetensors file.
        """
        vec = self.vector.detach().to("cpu", torch.float32).contiguous()
        payload = vec.numpy().astype("<f4").tobytes()
        header = {
            "__metadata__": {str(k): str(v) for k, v in self.metadata.items()},
            TENSOR_KEY: {"dtype": "F32", "shape": [int(vec.numel())], "data_offsets": [0, len(payload)]},
        }
        raw = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        raw += b" " * (-len(raw) % 8)  # the format aligns the data to 8 bytes
        return len(raw).to_bytes(8, "little") + raw + payload

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Task2VecEmbedding:
        try:
            tensors = st_load(data)
        except (SafetensorError, Exception) as exc:  # safetensors raises a few types on garbage
            raise EmbeddingError(f"{source}: not a valid safetensors file ({exc}); re-download or recompute it") from exc
        if set(tensors) != {TENSOR_KEY}:
            raise EmbeddingError(
                f"{source}: expected exactly one tensor {TENSOR_KEY!r}, found {sorted(tensors)}; "
                "this is not a t2v-hub embedding file"
            )
        meta = _read_metadata(data)
        missing = [f for f in REQUIRED_FIELDS if f not in meta]
        if missing:
            raise EmbeddingError(f"{source}: metadata lacks {missing}; this file was not written by t2v-hub")
        vec = tensors[TENSOR_KEY]
        if vec.dtype != torch.float32:
            # float64 would be rounded, int8 truncated, bfloat16 is not what was computed: refuse, don't convert.
            raise EmbeddingError(f"{source}: embedding is stored as {str(vec.dtype).replace('torch.', '')}; t2v-hub "
                                 "writes float32: recompute it, or convert it deliberately and save it again")
        if vec.dim() != 1 or str(vec.numel()) != meta["dim"]:
            raise EmbeddingError(f"{source}: tensor shape {tuple(vec.shape)} does not match dim={meta['dim']}")
        check_vector(vec, source)
        out = cls.__new__(cls)
        out.vector, out.metadata = vec.contiguous(), meta
        return out

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically: a temporary file in the same folder, then rename."""
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Task2VecEmbedding:
        check_path("path", path, expected="the path of a .safetensors file written by `t2v-hub embed`", optional=False,
                   error=EmbeddingError)
        p = Path(path)
        if p.is_dir():
            raise EmbeddingError(f"{str(p)!r} is a folder, not an embedding file; pass a .safetensors file "
                                 "written by `t2v-hub embed`")
        if not p.is_file():
            raise EmbeddingError(f"embedding file {str(p)!r} not found; check the path or run `t2v-hub embed` first")
        return cls.from_bytes(p.read_bytes(), source=str(p))

    def sha256(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def __repr__(self) -> str:
        return (
            f"Task2VecEmbedding(probe={self.probe!r}, method={self.method!r}, dim={self.dim}, "
            f"norm={self.norm:.4g}, dataset={self.metadata.get('dataset_id', '')!r})"
        )


def check_vector(v: torch.Tensor, what: str) -> None:
    """A Fisher embedding is finite, non-negative and not all zero (a zero vector has no direction)."""
    if not torch.isfinite(v).all():
        raise EmbeddingError(f"{what}: embedding contains NaN or Inf; recompute it (check the estimator's inputs)")
    if v.numel() and bool((v < 0).any()):
        raise EmbeddingError(f"{what}: embedding has negative entries ({int((v < 0).sum())}); a Fisher is never "
                             "negative: the file is damaged or not a TASK2VEC embedding")
    if v.numel() and not bool((v > 0).any()):
        raise EmbeddingError(f"{what}: embedding is all zero: it has no direction, so no distance is defined "
                             "(no measured weight affects the loss: e.g. images of a few pixels, or a random-init "
                             "probe whose residual scales start at zero); use input_size near the probe's own "
                             "(224 for most), pretrained weights or another probe")


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple | bool) or value is None:
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _read_metadata(data: bytes) -> dict[str, str]:
    # safetensors.torch.load drops metadata: read the JSON header directly.
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return dict(header.get("__metadata__", {}) or {})


def write_failed(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """One line for an OS-level write failure, with the fix that fits its cause."""
    why = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there, or choose a path on another disk"
    elif exc.errno == errno.EROFS:
        fix = "that file system is read-only: choose a writable path"
    else:
        fix = "choose a writable path"
    return OutputError(f"cannot write {str(path)!r}: {why}; {fix}")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    check_path("path", path, expected="a file path to write to", optional=False, error=OutputError)
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {str(p)!r}: it is a folder; pass a file name inside it")
    if p.exists() and not p.is_file():
        # /dev/null or a FIFO: renaming a temporary file over it would replace the device itself.
        try:
            with p.open("wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise write_failed(p, exc) from exc
        return p
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"cannot write {str(p)!r}: folder {str(parent)!r} does not exist; create it first")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise write_failed(p, exc) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise write_failed(p, exc) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def stack(embeddings: list[Task2VecEmbedding]) -> torch.Tensor:
    """Stack compatible embeddings into an (n, dim) matrix, checking compatibility."""
    if not embeddings:
        return torch.zeros(0, 0)
    first = embeddings[0]
    for e in embeddings[1:]:
        first.check_compatible(e)
    return torch.stack([e.vector for e in embeddings])
