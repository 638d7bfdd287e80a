"""A memory-mapped index of expert embeddings, for hubs too large to hold twice in memory.

``recommend`` against a hub downloads every expert's embedding and stacks them: with
100k experts of 21,008 filters that is 8 GB of objects plus an 8 GB stacked copy. An
index stores the matrix once, in safetensors shards, and ranking maps them
(``mmap``, read-only, zero copy): only the pages the kernel touches are read, the OS
may drop them again, and memory beyond the shards is one score per expert.

Layout of an index folder (written to a temporary folder, then renamed into place)::

    t2v_index.json                       ids, tasks, card URLs, the embedding space, shard list
    experts-00000.safetensors ...        tensor "embeddings": (rows, dim), float32 or bfloat16
    trivial.safetensors                  tensor "d_sym_to_trivial": (n,), and t0 itself; for variational
                                         experts also each one's learned prior (see .index_write)

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
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import space_of
from ..constants import VARIATIONAL_ASYM_ALPHA
from ..embedding import Task2VecEmbedding, first_space_difference
from ..errors import IncompatibleEmbeddingError, RecommendError
from .distances import paired_sym
from .index_write import (
    DEFAULT_SHARD_ROWS,
    DTYPES,
    INDEX_FILE,
    INDEX_VERSION,
    PRIOR_CHUNK_ROWS,
    build_index,
    precisions,
    write_index,
)
from .kernels.ranking import sym_to_target
from .model2vec import Model2Vec, vector_digest
from .prior_term import has_learned_prior, precision_view
from .scoring import (
    EmbedPlan,
    Recommendation,
    build_recommendations,
    resolve_alpha,
    resolve_trivial,
    top_rows,
    top_rows_with,
)

_PRIOR_KEYS = {"prior_scale", "layers", "d_sym_to_own_prior"}


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
    # Variational experts' learned priors (None for other indexes): (n, layers), (dim,), (n,).
    prior_scale: torch.Tensor | None = None
    layers: torch.Tensor | None = None
    to_own_prior: torch.Tensor | None = None

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


# -- loading ----------------------------------------------------------------------------------


def _map_shard(path: Path, rows: int, dim: int, dtype_name: str) -> tuple[torch.Tensor, mmap.mmap]:
    torch_dtype, st_dtype, itemsize = DTYPES[dtype_name]
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
    if meta.get("format_version") != INDEX_VERSION or meta.get("dtype") not in DTYPES:
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
    extra = set(triv) - {"d_sym_to_trivial", "t0"}
    if not {"d_sym_to_trivial", "t0"} <= set(triv) or extra not in (set(), _PRIOR_KEYS) \
            or triv["d_sym_to_trivial"].shape != (n,) or triv["t0"].shape != (dim,) or (extra and not _priors_fit(triv, n, dim)):
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
                       shards, triv["d_sym_to_trivial"], triv["t0"], maps,
                       triv.get("prior_scale"), triv.get("layers"), triv.get("d_sym_to_own_prior"))


def _priors_fit(triv: dict[str, torch.Tensor], n: int, dim: int) -> bool:
    scale, layers, own = triv["prior_scale"], triv["layers"], triv["d_sym_to_own_prior"]
    return (scale.dim() == 2 and scale.shape[0] == n and layers.shape == (dim,) and own.shape == (n,)
            and not layers.is_floating_point() and bool(((layers >= 0) & (layers < scale.shape[1])).all())
            and bool(torch.isfinite(scale).all() and (scale > 0).all() and torch.isfinite(own).all()))


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
    include: Sequence[str] = (),
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
    elif trivial is None and has_learned_prior(target) and index.prior_scale is not None:
        return _rank_index_by_prior(target, index, alpha, top_k, name_for, notes)
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
    wanted = set(include)
    top, ranks = top_rows_with(scores, top_k, [i for i, r in enumerate(index.ids) if r in wanted] if wanted else ())
    rows = torch.tensor(top, dtype=torch.long)
    return build_recommendations(
        top, scores, d_task[rows], d_triv[rows], a, offset, seen if selector is not None else None, prob,
        index.ids, index.tasks, index.urls, name_for, ranks,
    )


def _rank_index_by_prior(target: Task2VecEmbedding, index: ExpertIndex, alpha: float | None, top_k: int,
                         name_for: Callable[[str], str] | None, notes: list[str]) -> list[Recommendation]:
    """:func:`t2v_hub.selection.scoring.rank_experts`'s per-expert prior term, from the stored priors."""
    assert index.prior_scale is not None and index.layers is not None and index.to_own_prior is not None
    a = float(alpha if alpha is not None else VARIATIONAL_ASYM_ALPHA)
    p_target, _ = precision_view(target, index.layers)
    d_task, start = [], 0
    for shard in index.shards:
        for s in range(0, shard.shape[0], PRIOR_CHUNK_ROWS):
            rows = shard[s : s + PRIOR_CHUNK_ROWS]
            P, _ = precisions(rows, index.prior_scale[start + s : start + s + rows.shape[0]], index.layers)
            d_task.append(paired_sym(P, p_target.expand_as(P)))
        start += shard.shape[0]
    d = _finite(index, torch.cat(d_task))
    scores = d - a * index.to_own_prior
    top = top_rows(scores, top_k)
    rows_t = torch.tensor(top, dtype=torch.long)
    notes.append(f"variational embeddings: d_asym compares precisions, each expert's own learned prior as its t0 "
                 f"(alpha={a:g})")
    return build_recommendations(top, scores, d[rows_t], index.to_own_prior[rows_t], a, torch.zeros(index.size),
                                 None, None, index.ids, index.tasks, index.urls, name_for)


__all__ = ["DEFAULT_SHARD_ROWS", "INDEX_FILE", "INDEX_VERSION", "ExpertIndex", "build_index", "load_index",
           "rank_index", "write_index"]
