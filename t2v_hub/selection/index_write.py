"""Writing an expert index (the layout is described in :mod:`t2v_hub.selection.index`).

An index appears whole or not at all: every file is written into a temporary folder beside the
destination, which is then renamed into place. For variational experts that record their learned
prior, ``trivial.safetensors`` also holds each expert's prior (``prior_scale``: (n, layers), the
``(beta/2) lambda^2`` of :mod:`.prior_term`), the probe's layer of every filter (``layers``) and
``d_sym_to_own_prior`` (n,), so that ranking from the index gives the per-expert prior term
exactly as ranking the hub does.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..config import check_count, check_flag
from ..embedding import COMPAT_FIELDS, OPTIONAL_COMPAT_FIELDS, Task2VecEmbedding
from ..errors import IncompatibleEmbeddingError, RecommendError
from .kernels.ranking import sym_to_target
from .model2vec import vector_digest

INDEX_FILE = "t2v_index.json"
INDEX_VERSION = 1
DEFAULT_SHARD_ROWS = 8192
DTYPES = {"float32": (torch.float32, "F32", 4), "bfloat16": (torch.bfloat16, "BF16", 2)}
PRIOR_CHUNK_ROWS = 1024  # rows of precisions formed at a time (a shard at hub scale is gigabytes)


def _space(e: Task2VecEmbedding) -> dict[str, str]:
    return {f: e.metadata[f] for f in COMPAT_FIELDS + OPTIONAL_COMPAT_FIELDS if e.metadata.get(f)}


def _shard_bytes(rows: torch.Tensor, dtype_name: str) -> bytes:
    from safetensors.torch import save

    return save({"embeddings": rows.to(DTYPES[dtype_name][0]).contiguous()})


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
    check_count("shard_rows", shard_rows, 1, error=RecommendError)
    check_flag("overwrite", overwrite, error=RecommendError)  # "no" is truthy: it would replace the index
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise RecommendError(f"index dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    # A hub passed for its experts, or a generator: named, not "'LocalHub' object is not subscriptable".
    if not isinstance(experts, Sequence) or not all(hasattr(e, "embedding") and hasattr(e, "repo_id") for e in experts):
        raise RecommendError(f"experts={type(experts).__name__}: expected the list of experts that "
                             "t2v_hub.hub.list_experts(hub) returns first")
    if trivial is not None and not isinstance(trivial, Task2VecEmbedding):
        raise RecommendError(f"trivial={type(trivial).__name__}: expected a Task2VecEmbedding, or None")
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

    priors = expert_priors([ex.embedding for ex in experts])

    def blocks() -> Iterator[torch.Tensor]:
        for start in range(0, len(experts), shard_rows):
            yield torch.stack([ex.embedding.vector.float() for ex in experts[start : start + shard_rows]])

    return write_index(
        out, _space(first), [ex.repo_id for ex in experts], [ex.task or "" for ex in experts],
        [ex.url or "" for ex in experts], blocks(), trivial.vector, dtype=dtype, overwrite=overwrite, priors=priors,
    )


def expert_priors(embeddings: Sequence[Task2VecEmbedding]) -> dict[str, torch.Tensor] | None:
    """``{"prior_scale": (n, layers), "layers": (dim,)}`` when every embedding records its learned prior."""
    from .prior_term import has_learned_prior, layer_prior

    if not embeddings or not all(has_learned_prior(e) for e in embeddings):
        return None
    from .layer_weights import layer_ids

    layers = layer_ids(embeddings[0])
    scale = torch.stack([layer_prior(e, layers) for e in embeddings])
    return {"prior_scale": scale.contiguous(), "layers": layers.to(torch.int64).contiguous()}


def precisions(rows: torch.Tensor, scale: torch.Tensor, layers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, t0)`` of stored rows: the rows plus each one's own prior, and that prior, per filter."""
    t0 = scale[:, layers]
    return rows.float() + t0, t0


def own_prior_distances(rows: torch.Tensor, scale: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    """d_sym(P_e, t0_e) for every stored row, :data:`PRIOR_CHUNK_ROWS` rows at a time."""
    from .distances import paired_sym

    out = []
    for s in range(0, rows.shape[0], PRIOR_CHUNK_ROWS):
        P, t0 = precisions(rows[s : s + PRIOR_CHUNK_ROWS], scale[s : s + PRIOR_CHUNK_ROWS], layers)
        out.append(paired_sym(P, t0))
    return torch.cat(out) if out else torch.zeros(0)


def check_destination(out: str | os.PathLike[str], overwrite: bool) -> Path:
    """Where an index may be written: a new path, or (with ``overwrite``) an existing index, nothing else."""
    dest = Path(out)
    if dest.exists() and not overwrite:
        raise RecommendError(f"{dest} exists; pass overwrite=True to replace it")
    if dest.exists() and (dest.is_symlink() or not dest.is_dir() or not (dest / INDEX_FILE).is_file()):
        # Replace only what is recognisably an index: never a folder of the user's files.
        raise RecommendError(f"{dest} exists and is not an expert index (no {INDEX_FILE}); refusing to replace it: "
                             "choose another output folder, or remove it yourself")
    return dest


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
    priors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write an index from row blocks (one shard each), holding one block in memory at a time.

    ``priors``: what :func:`expert_priors` returns for the same experts, in the same order.
    """
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise RecommendError(f"index dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    dest = check_destination(out, overwrite)
    t0 = trivial.float().reshape(-1)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shards, to_trivial, to_own, total = [], [], [], 0
        for i, rows in enumerate(blocks):
            if rows.dim() != 2 or rows.shape[1] != t0.numel():
                raise RecommendError(f"row block {i} has shape {tuple(rows.shape)}; expected (rows, {t0.numel()})")
            name = f"experts-{i:05d}.safetensors"
            stored = rows.to(DTYPES[dtype][0]).contiguous()
            (tmp / name).write_bytes(_shard_bytes(stored, dtype))
            shards.append({"file": name, "rows": int(rows.shape[0])})
            total += int(rows.shape[0])
            # Distances to t0 from the stored (possibly rounded) rows, as ranking will see them.
            to_trivial.append(sym_to_target(stored, t0))
            if priors is not None:
                scale = priors["prior_scale"][total - int(rows.shape[0]) : total]
                if scale.shape[0] != rows.shape[0]:
                    raise RecommendError(f"priors cover {priors['prior_scale'].shape[0]} experts, the rows more")
                to_own.append(own_prior_distances(stored, scale, priors["layers"]))
        if not (total == len(ids) == len(tasks) == len(urls)):
            raise RecommendError(f"{total} rows for {len(ids)} ids, {len(tasks)} tasks, {len(urls)} urls")
        from safetensors.torch import save

        trivial_file = {"d_sym_to_trivial": torch.cat(to_trivial), "t0": t0}
        if priors is not None:
            if priors["prior_scale"].shape[0] != total or priors["layers"].shape != (t0.numel(),):
                raise RecommendError(f"priors of shape {tuple(priors['prior_scale'].shape)} / "
                                     f"{tuple(priors['layers'].shape)} do not match {total} rows of {t0.numel()}")
            trivial_file.update(priors, d_sym_to_own_prior=torch.cat(to_own))
        (tmp / "trivial.safetensors").write_bytes(save(trivial_file))
        meta = {
            "format_version": INDEX_VERSION, "dtype": dtype, "dim": int(t0.numel()), "space": dict(space),
            "ids": list(ids), "tasks": list(tasks), "urls": list(urls), "shards": shards,
            "trivial_digest": vector_digest(t0),
        }
        (tmp / INDEX_FILE).write_text(json.dumps(meta) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)  # the index appears whole or not at all
    except OSError as exc:  # disk full, quota, read-only: the partial index goes, one line says why
        shutil.rmtree(tmp, ignore_errors=True)
        from ..embedding import write_failed

        raise write_failed(dest, exc) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


__all__ = ["DEFAULT_SHARD_ROWS", "DTYPES", "INDEX_FILE", "INDEX_VERSION", "build_index", "check_destination",
           "expert_priors",
           "own_prior_distances", "precisions", "write_index"]
