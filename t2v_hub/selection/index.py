"""A memory-mapped index of expert embeddings, for hubs too large to hold twice in memory.

``recommend`` against a hub downloads every expert's embedding and stacks them: with
100k experts of 21,008 filters that is 8 GB of objects plus an 8 GB stacked copy. An
index stores the matrix once, in safetensors shards, and ranking maps them
(``mmap``, read-only, zero copy): only the pages the kernel touches are read, the OS
may drop them again, and memory beyond the shards is one score per expert.

Layout of an index folder (written to a temporary folder, then renamed into place)::

    t2v_index.json                       ids, tasks, card URLs, the embedding space, shard list
    experts-00000.safetensors ...        tensor "embeddings": (rows, dim), float32 or bfloat16
    trivial.safetensors                  tensor "d_sym_to_trivial": (n,), and t0 itself

``t2v-hub index --hub H --out DIR`` builds one; ``t2v-hub recommend --index DIR`` ranks
from it, with or without a MODEL2VEC selector (only the experts the selector was
trained on need their biased rows, which are gathered; every other row is scored in
place).
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import shutil
import struct
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import space_of
from ..embedding import COMPAT_FIELDS, OPTIONAL_COMPAT_FIELDS, Task2VecEmbedding, first_space_difference
from ..errors import IncompatibleEmbeddingError, RecommendError
from .kernels.ranking import sym_to_target
from .model2vec import Model2Vec, vector_digest
from .scoring import (
    EmbedPlan,
    Recommendation,
    build_recommendations,
    resolve_alpha,
    resolve_trivial,
    top_rows,
)

INDEX_FILE = "t2v_index.json"
INDEX_VERSION = 1
DEFAULT_SHARD_ROWS = 8192
_DTYPES = {"float32": (torch.float32, "F32", 4), "bfloat16": (torch.bfloat16, "BF16", 2)}


@dataclass
class ExpertIndex:
    """Expert ids, tasks and URLs, and the memory-mapped embedding shards."""

    root: Path
    ids: list[str]
    tasks: list[str]
    urls: list[str]
    space: dict[str, str]  # the embedding metadata that decides comparability
    shards: list[torch.Tensor]  # (rows, dim) views of the mapped files
    to_trivial: torch.Tensor  # (n,) d_sym(expert, t0) for the stored t0
    trivial: torch.Tensor  # the t0 the column was computed with
    _maps: list[mmap.mmap] = field(default_factory=list, repr=False)

    @property
    def size(self) -> int:
        return len(self.ids)

    def plan(self) -> EmbedPlan:
        """How to embed a target so it is comparable with these experts."""
        space = space_of(self.space)
        return EmbedPlan(space.probe, space.method, space.input_size, space.include_norm, self.size)

    def check_compatible(self, target: Task2VecEmbedding) -> None:
        diff = first_space_difference(target.metadata, self.space)
        if diff is not None:
            f, a, b = diff
            raise IncompatibleEmbeddingError(
                f"target and index differ in {f}: {a!r} vs {b!r}; embed the target with the index's {f}"
            )

    def rows(self, positions: Sequence[int]) -> torch.Tensor:
        """The embeddings at ``positions`` (a float32 copy of those rows only)."""
        out, starts = [], [0]
        for s in self.shards:
            starts.append(starts[-1] + s.shape[0])
        for p in positions:
            k = max(i for i in range(len(self.shards)) if starts[i] <= p)
            out.append(self.shards[k][p - starts[k]].float())
        return torch.stack(out) if out else torch.zeros(0, self.shards[0].shape[1] if self.shards else 0)

    def sym_to(self, target: torch.Tensor) -> torch.Tensor:
        """d_sym(expert, target) for every expert, shard by shard (no copy of the matrix)."""
        return torch.cat([sym_to_target(s, target) for s in self.shards]) if self.shards else torch.zeros(0)

    def close(self) -> None:
        self.shards.clear()
        for m in self._maps:
            with contextlib.suppress(BufferError):  # a tensor view is still alive: it closes with it
                m.close()
        self._maps.clear()


# -- building ---------------------------------------------------------------------------------


def _space(e: Task2VecEmbedding) -> dict[str, str]:
    return {f: e.metadata[f] for f in COMPAT_FIELDS + OPTIONAL_COMPAT_FIELDS if e.metadata.get(f)}


def _shard_bytes(rows: torch.Tensor, dtype_name: str) -> bytes:
    from safetensors.torch import save

    return save({"embeddings": rows.to(_DTYPES[dtype_name][0]).contiguous()})


def build_index(
    experts: Sequence[Any],
    out: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    shard_rows: int = DEFAULT_SHARD_ROWS,
    trivial: Task2VecEmbedding | None = None,
    overwrite: bool = False,
) -> Path:
    """Write an index of ``experts`` (``t2v_hub.hub.Expert``-like, one embedding space) to ``out``.

    Experts must all be comparable (pass the ones :func:`t2v_hub.hub.list_experts` gives
    for one probe and method). ``trivial`` defaults to the probe's t0 (computed once, cached).
    """
    if shard_rows < 1:
        raise RecommendError(f"shard_rows must be at least 1, got {shard_rows}")
    if not experts:
        raise RecommendError("no experts to index; check hub=, filter= and probe=")
    first = experts[0].embedding
    for ex in experts[1:]:
        try:
            first.check_compatible(ex.embedding)
        except IncompatibleEmbeddingError as exc:
            raise RecommendError(f"{ex.repo_id} is not comparable with {experts[0].repo_id} ({exc}); "
                                 "index one probe and method at a time (probe=, method=)") from exc
    if trivial is None:
        from ..trivial import trivial_for

        trivial = trivial_for(first)
    first.check_compatible(trivial)

    def blocks() -> Iterator[torch.Tensor]:
        for start in range(0, len(experts), shard_rows):
            yield torch.stack([ex.embedding.vector.float() for ex in experts[start : start + shard_rows]])

    return write_index(
        out, _space(first), [ex.repo_id for ex in experts], [ex.task or "" for ex in experts],
        [ex.url or "" for ex in experts], blocks(), trivial.vector, dtype=dtype, overwrite=overwrite,
    )


def write_index(
    out: str | os.PathLike[str],
    space: dict[str, str],
    ids: Sequence[str],
    tasks: Sequence[str],
    urls: Sequence[str],
    blocks: Iterable[torch.Tensor],
    trivial: torch.Tensor,
    *,
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Write an index from row blocks (one shard each), holding one block in memory at a time."""
    if dtype not in _DTYPES:
        raise RecommendError(f"index dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    dest = Path(out)
    if dest.exists() and not overwrite:
        raise RecommendError(f"{dest} exists; pass overwrite=True to replace it")
    if dest.exists() and (dest.is_symlink() or not dest.is_dir() or not (dest / INDEX_FILE).is_file()):
        # Replace only what is recognisably an index: never a folder of the user's files.
        raise RecommendError(f"{dest} exists and is not an expert index (no {INDEX_FILE}); refusing to replace it: "
                             "choose another output folder, or remove it yourself")
    t0 = trivial.float().reshape(-1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shards, to_trivial, total = [], [], 0
        for i, rows in enumerate(blocks):
            if rows.dim() != 2 or rows.shape[1] != t0.numel():
                raise RecommendError(f"row block {i} has shape {tuple(rows.shape)}; expected (rows, {t0.numel()})")
            name = f"experts-{i:05d}.safetensors"
            stored = rows.to(_DTYPES[dtype][0]).contiguous()
            (tmp / name).write_bytes(_shard_bytes(stored, dtype))
            shards.append({"file": name, "rows": int(rows.shape[0])})
            total += int(rows.shape[0])
            # Distances to t0 from the stored (possibly rounded) rows, as ranking will see them.
            to_trivial.append(sym_to_target(stored, t0))
        if not (total == len(ids) == len(tasks) == len(urls)):
            raise RecommendError(f"{total} rows for {len(ids)} ids, {len(tasks)} tasks, {len(urls)} urls")
        from safetensors.torch import save

        (tmp / "trivial.safetensors").write_bytes(save({"d_sym_to_trivial": torch.cat(to_trivial), "t0": t0}))
        meta = {
            "format_version": INDEX_VERSION, "dtype": dtype, "dim": int(t0.numel()), "space": dict(space),
            "ids": list(ids), "tasks": list(tasks), "urls": list(urls), "shards": shards,
            "trivial_digest": vector_digest(t0),
        }
        (tmp / INDEX_FILE).write_text(json.dumps(meta) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)  # the index appears whole or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# -- loading ----------------------------------------------------------------------------------


def _map_shard(path: Path, rows: int, dim: int, dtype_name: str) -> tuple[torch.Tensor, mmap.mmap]:
    torch_dtype, st_dtype, itemsize = _DTYPES[dtype_name]
    bad = f"index shard {path} is damaged or not from this index; rebuild the index"
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise RecommendError(f"index shard {path} is missing; rebuild the index") from exc
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 8:
            raise RecommendError(bad)
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > min(size - 8, 1 << 20):
            raise RecommendError(bad)
        try:
            info = json.loads(fh.read(n))["embeddings"]
        except (ValueError, KeyError, TypeError) as exc:
            raise RecommendError(bad) from exc
        begin, end = info.get("data_offsets", [0, 0])
        if info.get("dtype") != st_dtype or info.get("shape") != [rows, dim] or end - begin != rows * dim * itemsize \
                or 8 + n + end > size:
            raise RecommendError(bad)
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "non-writable buffer": we only ever read it
        t = torch.frombuffer(mm, dtype=torch_dtype, count=rows * dim, offset=8 + n + begin)
    return t.view(rows, dim), mm


_SHARD_NAME = re.compile(r"^experts-[0-9]{5}\.safetensors$")


def _manifest(root: Path) -> dict[str, Any]:
    """The index manifest, every field checked for type: any damage is one error naming the file."""
    if root.exists() and not root.is_dir():
        raise RecommendError(f"{root} is a file, not an expert index folder; pass the folder `t2v-hub index` wrote")
    if not root.exists():
        raise RecommendError(f"{root} is not an expert index (no such folder); build one with `t2v-hub index`")
    try:
        meta = json.loads((root / INDEX_FILE).read_text())
    except FileNotFoundError as exc:
        raise RecommendError(f"{root} is not an expert index (no {INDEX_FILE}); build one with `t2v-hub index`") from exc
    except (ValueError, OSError) as exc:
        raise RecommendError(f"{root / INDEX_FILE} is not valid JSON; rebuild the index") from exc
    bad = f"{root / INDEX_FILE} is damaged or hand-edited"
    if not isinstance(meta, dict):
        raise RecommendError(f"{bad} (not an object); rebuild the index")
    if meta.get("format_version") != INDEX_VERSION or meta.get("dtype") not in _DTYPES:
        raise RecommendError(f"{root} holds an index of another format; rebuild it with this t2v-hub")
    lists = ("ids", "tasks", "urls")
    if not all(isinstance(meta.get(k), list) and all(isinstance(x, str) for x in meta[k]) for k in lists) \
            or not isinstance(meta.get("dim"), int) or meta["dim"] < 1 or not isinstance(meta.get("space"), dict) \
            or not isinstance(meta.get("shards"), list):
        raise RecommendError(f"{bad} (missing keys or wrong types); rebuild the index")
    for s in meta["shards"]:
        if not isinstance(s, dict) or not isinstance(s.get("rows"), int) or s["rows"] < 0 \
                or not isinstance(s.get("file"), str):
            raise RecommendError(f"{bad} (a shard entry is malformed); rebuild the index")
        # Shards are files of the index folder itself: no path, no link.
        if not _SHARD_NAME.match(s["file"]) or (root / s["file"]).is_symlink():
            raise RecommendError(f"{bad}: shard {s['file']!r} is not a file of the index folder; rebuild the index")
    n = len(meta["ids"])
    if sum(s["rows"] for s in meta["shards"]) != n or not (len(meta["tasks"]) == len(meta["urls"]) == n):
        raise RecommendError(f"{root / INDEX_FILE} is inconsistent (row counts); rebuild the index")
    return meta


def load_index(path: str | os.PathLike[str]) -> ExpertIndex:
    """Open an index folder; the shards are memory-mapped, not read (ranking checks what it reads)."""
    root = Path(path)
    meta = _manifest(root)
    n, dim = len(meta["ids"]), int(meta["dim"])
    from safetensors.torch import load_file

    try:
        triv = load_file(str(root / "trivial.safetensors"))
    except Exception as exc:
        raise RecommendError(f"{root}/trivial.safetensors is missing or damaged; rebuild the index") from exc
    if set(triv) != {"d_sym_to_trivial", "t0"} or triv["d_sym_to_trivial"].shape != (n,) \
            or triv["t0"].shape != (dim,):
        raise RecommendError(f"{root}/trivial.safetensors does not match the index; rebuild it")
    if not (torch.isfinite(triv["d_sym_to_trivial"]).all() and torch.isfinite(triv["t0"]).all()) \
            or bool((triv["t0"] < 0).any()) or not bool((triv["t0"] > 0).any()):
        raise RecommendError(f"{root}/trivial.safetensors holds NaN, Inf, negative or all-zero values; rebuild the index")
    shards, maps = [], []
    for s in meta["shards"]:
        t, mm = _map_shard(root / s["file"], int(s["rows"]), dim, meta["dtype"])
        shards.append(t)
        maps.append(mm)
    return ExpertIndex(root, list(meta["ids"]), list(meta["tasks"]), list(meta["urls"]), dict(meta["space"]),
                       shards, triv["d_sym_to_trivial"], triv["t0"], maps)


# -- ranking ----------------------------------------------------------------------------------


def _finite(index: ExpertIndex, d: torch.Tensor) -> torch.Tensor:
    """Distances the ranking read, refused if a damaged row made one NaN or Inf.

    Checked here, on the (n,) result of the one pass ranking makes anyway, rather than by a
    second pass over every shard when the index is opened (the shards are gigabytes at hub scale).
    """
    bad = (~torch.isfinite(d)).nonzero()
    if bad.numel():
        row, start = int(bad[0]), 0
        for k, s in enumerate(index.shards):
            if row < start + s.shape[0]:
                raise RecommendError(f"index shard experts-{k:05d}.safetensors of {index.root} holds NaN or Inf "
                                     f"(row {row - start}, expert {index.ids[row]!r}); rebuild the index")
            start += s.shape[0]
    return d


def rank_index(
    target: Task2VecEmbedding,
    index: ExpertIndex,
    *,
    alpha: float | None = None,
    selector: Model2Vec | None = None,
    trivial: Task2VecEmbedding | torch.Tensor | None = None,
    top_k: int = 5,
    name_for: Callable[[str], str] | None = None,
    notes: list[str] | None = None,
) -> list[Recommendation]:
    """Like :func:`t2v_hub.selection.scoring.rank_experts`, over an index: the same scores and order."""
    notes = notes if notes is not None else []
    if top_k < 1:
        raise RecommendError(f"top_k must be at least 1, got {top_k}")
    if index.size == 0:
        raise RecommendError(f"the index {index.root} holds no experts")
    index.check_compatible(target)
    if selector is not None:
        selector.check_compatible(target)
    a = resolve_alpha(alpha, selector, notes)
    # Default t0: the selector's (its biases were trained against it), else the one stored at build time.
    default = None if selector is not None else index.trivial
    t0 = resolve_trivial(target, trivial if trivial is not None else default, selector, notes)
    d_task = _finite(index, index.sym_to(target.vector))
    same_t0 = vector_digest(t0) == vector_digest(index.trivial)
    d_triv = index.to_trivial if same_t0 else _finite(index, index.sym_to(t0))
    scores = d_task - a * d_triv
    offset = torch.zeros(index.size)
    seen = torch.zeros(index.size, dtype=torch.bool)
    prob = None
    if selector is not None:
        # Only the experts the selector was trained on have a per-expert bias: gather, rescore those rows.
        known = set(selector.expert_ids)
        pos = [i for i, r in enumerate(index.ids) if r in known]
        if not pos:
            raise RecommendError(
                f"the selector was trained for a different expert set (e.g. {', '.join(selector.expert_ids[:3])}); "
                f"none of the index's {index.size} experts is among them. Train one on these experts"
            )
        m, off, _, sel_notes = selector.apply([index.ids[i] for i in pos], index.rows(pos))
        notes.extend(n for n in sel_notes if "unseen" not in n)
        if len(pos) < index.size and selector.filter_weights is None:
            notes.append(f"{index.size - len(pos)} expert(s) unseen in training ranked with no learned bias (b_j = 0)")
        rows = torch.tensor(pos, dtype=torch.long)
        if selector.filter_weights is not None:  # a learned metric shared by every expert, seen or not
            scores = torch.cat([selector.distances(s.float(), target.vector[None], a, t0)[0] for s in index.shards])
            scores[rows] += off
        else:
            scores[rows] = sym_to_target(m, target.vector) - a * sym_to_target(m, t0) + off
        offset[rows], seen[rows] = off, True
        prob = torch.softmax(-selector.gamma * scores.double(), 0)
    top = top_rows(scores, top_k)
    rows = torch.tensor(top, dtype=torch.long)
    return build_recommendations(
        top, scores, d_task[rows], d_triv[rows], a, offset, seen if selector is not None else None, prob,
        index.ids, index.tasks, index.urls, name_for,
    )


__all__ = ["INDEX_FILE", "ExpertIndex", "build_index", "load_index", "rank_index", "write_index"]
