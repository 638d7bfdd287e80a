"""The trivial embedding ``t0``: the probe's Fisher for a task that carries no information.

d_asym subtracts an expert's distance to it (see :mod:`t2v_hub.selection.distances`).
It depends only on the probe, its weights, the layout and the method, so it is
computed once per (probe, weights, layout, method) and cached.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from . import constants as C
from .cache import cache_subdir
from .config import HeadConfig, check_count, check_flag, check_path, space_of
from .data.tensors import TensorTask
from .embedding import Task2VecEmbedding
from .errors import EmbeddingError, FisherError
from .probes import create_probe


def _cache_key(weights_sha256: str, layout_hash: str, method: str, num_samples: int, h: int, w: int,
               seed: int) -> str:
    # The variational estimate depends on its optimiser: a t0 cached under another default is stale.
    estimator = f"{method}/{C.VARIATIONAL_OPTIMIZER}" if method == "variational" else method
    return hashlib.sha256(f"{weights_sha256}|{layout_hash}|{estimator}|{num_samples}|{h}x{w}|{seed}".encode()
                          ).hexdigest()[:24]


def _cached_for(meta: dict[str, str], method: str) -> Task2VecEmbedding | None:
    """The cached t0 of an embedding's space, found from its recorded weights, layout and input
    size alone: no probe is built (building one imports timm and creates the model, seconds on a
    CPU), so ranking against a saved embedding starts fast once t0 exists."""
    try:
        size = json.loads(meta.get("input_size") or "null")
    except ValueError:
        return None
    if not (meta.get("weights_sha256") and meta.get("layout_hash") and isinstance(size, list) and len(size) == 3
            and all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
        return None  # a damaged record: the slow path rebuilds the probe and says what is wrong
    key = _cache_key(meta["weights_sha256"], meta["layout_hash"], method, 64, size[1], size[2], 0)
    path = Path(C.cache_dir()) / "trivial" / f"{key}.safetensors"
    return Task2VecEmbedding.load(path) if path.is_file() else None


def trivial_embedding(
    probe: str = C.DEFAULT_PROBE,
    method: str = C.DEFAULT_FISHER_METHOD,
    *,
    num_samples: int = 64,
    input_size: int | None = None,
    include_norm: bool = False,
    pretrained: bool | None = None,
    checkpoint: str | None = None,
    cache: bool = True,
    seed: int = 0,
    quiet: bool = False,
) -> Task2VecEmbedding:
    """The probe's embedding of a task that carries no information (``t0``).

    Definition: seeded standard-normal images in the probe's normalised input space,
    two classes, labels drawn uniformly at random independently of the images, run
    through the *same* pipeline and estimator as real tasks. Nothing about the
    labels can be learned, so this is the Fisher a probe shows for "no task"; it is
    non-zero (a zero vector has no direction and makes the cosine undefined).
    """
    from .task2vec import embed

    # Before the probe is built: a wrong kind ends here naming the parameter, not in torch or os.stat.
    if method not in C.FISHER_METHODS:
        raise FisherError(f"unknown method {method!r}; choose one of {', '.join(C.FISHER_METHODS)}")
    for name, value in (("include_norm", include_norm), ("cache", cache), ("quiet", quiet)):
        check_flag(name, value)
    check_flag("pretrained", pretrained, optional=True)
    check_path("checkpoint", checkpoint, expected="the path of a .safetensors/.pth file")
    seed = check_count("seed", seed, 0)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise EmbeddingError(f"num_samples={num_samples!r}: t0 needs at least 2 samples (one per class of its "
                             "random labels); pass num_samples=64, the default")
    p = create_probe(probe, 2, include_norm=include_norm, input_size=input_size, pretrained=pretrained,
                     checkpoint_path=checkpoint)
    c, h, w = p.data_config["input_size"]
    key = _cache_key(p.config.weights_sha256, p.layout.hash(), method, num_samples, h, w, seed)
    folder = cache_subdir("trivial") if cache else None  # unusable: a warning now, and no cache
    path = folder / f"{key}.safetensors" if folder is not None else None
    if path is not None and path.is_file():
        return Task2VecEmbedding.load(path)
    if not quiet and not C.quiet_env():
        # Minutes on a CPU for a real probe, once per (probe, weights, layout, method): say so.
        print(f"computing the trivial embedding of {p.name} ({method}, {h}x{w}, {num_samples} samples); "
              "cached afterwards...", file=sys.stderr, flush=True)
    g = torch.Generator().manual_seed(10_000 + seed)
    images = torch.randn(num_samples, c, h, w, generator=g)
    labels = torch.randint(0, 2, (num_samples,), generator=g)
    labels[:2] = torch.tensor([0, 1])  # both classes present
    task = TensorTask(images, labels, {"dataset_id": "<trivial>", "trivial": True})
    emb = embed(task, p, method, seed=seed, include_norm=include_norm,
                head=replace(HeadConfig(), epochs=1, draws_per_epoch=max(256, num_samples)))
    emb.metadata["kind"] = "trivial"
    if path is not None:
        emb.save(path)
    return emb


def pretrained_for(meta: dict[str, str]) -> bool | None:
    """``create_probe``'s ``pretrained`` that rebuilds exactly the weights an embedding records.

    Never "whatever pretrained=True resolves to": a random-init probe's embedding gets a
    random-init t0 (offline, no download), packaged weights the package, timm weights timm's.
    """
    kind = meta.get("weights", "")
    if kind.startswith("random"):
        return False
    if kind in ("offline-package", ""):
        return None
    if kind == "timm":
        return True
    raise EmbeddingError(
        f"the embedding was made with {kind!r} weights, which t2v-hub cannot rebuild by name; pass the same "
        "checkpoint= (CLI: t2v-hub trivial --probe P --checkpoint FILE) and use the result as trivial="
    )


def trivial_for(embedding: Task2VecEmbedding, **kwargs: Any) -> Task2VecEmbedding:
    """The trivial embedding in an existing embedding's space: same probe, weights, input size and method.

    The probe is rebuilt from the weights the embedding records (:func:`pretrained_for`),
    and the result must have the recorded weights' sha256, or the error says which differs.
    """
    space = space_of(embedding.metadata)
    if not set(kwargs) - {"quiet"}:  # the defaults (64 samples, seed 0, cached): the key needs no probe
        hit = _cached_for(embedding.metadata, space.method)
        if hit is not None:
            embedding.check_compatible(hit)
            return hit
    kwargs.setdefault("pretrained", pretrained_for(embedding.metadata))
    t0 = trivial_embedding(space.probe, space.method, input_size=space.input_size,
                           include_norm=space.include_norm, **kwargs)
    embedding.check_compatible(t0)
    return t0


__all__ = ["pretrained_for", "trivial_embedding", "trivial_for"]
