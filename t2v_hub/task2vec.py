"""The embedding pipeline, a thin conductor: data -> probe -> head -> Fisher -> embedding.

Each step is a call into the room that owns it: :func:`t2v_hub.data.as_task`
(loading, subsampling), :mod:`t2v_hub.probes` (the probe and its head),
:func:`t2v_hub.head.fit_head`, :mod:`t2v_hub.fisher` (the estimators, the Monte
Carlo label draws included), :mod:`t2v_hub.distributed` (sharding and the exact
sum reduction) and :class:`t2v_hub.embedding.Task2VecEmbedding`. Every random
choice is drawn from generators seeded by ``seed``, so the same inputs give
bit-identical embeddings on the CPU.

Regression tasks (a float label column, or lists of ``k`` floats, standardised per
dimension by the data layer) use a ``k``-output head fit by mean squared error and
the Fisher of a unit-variance Gaussian (``montecarlo`` draws ``y = f(x) + N(0, 1)``);
``variational`` has no Gaussian loss and refuses them.

Imports every lower floor; nothing below it (``data``, ``probes``, ``fisher``,
``hub``) imports it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from . import constants as C
from .cache import cache_subdir
from .config import (
    EmbedConfig,
    FisherConfig,
    HeadConfig,
    check_count,
    check_flag,
    check_optional_count,
    check_path,
)
from .data.dense import DENSE_KINDS
from .data.rows import ImageRows
from .data.tensors import TensorTask, as_task
from .dense import check_method, dense_fisher
from .devices import pick_device
from .distributed import dist_info, gather_rows, reduce_result, shard_indices
from .embedding import Task2VecEmbedding
from .errors import DataError, FisherError, T2VError
from .fisher.common import parse_dtype
from .fisher.result import FisherResult
from .head import fit_head
from .probes import Probe, create_probe
from .run import LIKELIHOOD, EmbedRun, batched_outputs


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _batched_features(
    probe: Probe, images: torch.Tensor | ImageRows, batch_size: int, device: torch.device, quiet: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    return batched_outputs(probe.features, images, batch_size, device, None if quiet else "features", autocast_dtype)


def cache_key(task_meta: dict[str, Any], probe: Probe, config: EmbedConfig) -> str | None:
    fp = task_meta.get("fingerprint") or task_meta.get("dataset_revision")
    if not fp:
        return None
    payload = json.dumps(
        # All of the task's metadata, not just its identity: the same dataset read with another
        # label column, config or --on-bad-image is another task and must not hit this entry.
        {"data": {k: str(v) for k, v in sorted(task_meta.items())},
         "probe": probe.config.weights_sha256, "layout": probe.layout.hash(), "config": config.to_dict(),
         # The variational default optimiser changed (Adam -> gauss_newton): an entry made under
         # another default is another estimate. Other methods' keys are unchanged.
         **({"variational_optimizer": C.VARIATIONAL_OPTIMIZER} if config.fisher.method == "variational" else {})},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def _warn_if_unconverged(config: dict[str, Any]) -> None:
    """Say so when the variational precisions were still moving at the end (see fisher/variational.py)."""
    import warnings

    from .fisher.variational import UNCONVERGED_FRACTION

    late = config.get("late_change_fraction")
    if late is not None and late > UNCONVERGED_FRACTION:
        warnings.warn(
            f"variational Fisher not converged: {100 * late:.0f}% of the log-precision change came in the last "
            f"10% of {config.get('steps_done')} steps; pass fisher_options={{'steps': N}} with a larger N",
            RuntimeWarning,
            stacklevel=4,
        )


def _probe_for(probe: str | nn.Module | Probe, num_classes: int | None, config: EmbedConfig,
               pretrained: bool | None, checkpoint: str | None = None) -> Probe:
    """A fresh probe with a zero head of ``num_classes`` outputs (a copy when one is given).

    ``num_classes=None`` (dense tasks: the decoder replaces the head) keeps any head.
    """
    if isinstance(probe, Probe):
        if num_classes is not None and probe.num_classes != num_classes:
            raise DataError(f"probe has {probe.num_classes} classes but the task has {num_classes}")
        return probe.copy()
    # create_probe wants 2+ classes; a one-output regression head is made from it.
    num_classes = 2 if num_classes is None else num_classes
    p = create_probe(probe, max(num_classes, 2), include_norm=config.include_norm, input_size=config.input_size,
                     pretrained=pretrained, checkpoint_path=checkpoint)
    return p.with_outputs(num_classes) if p.num_classes != num_classes else p


def _check_channels(task: Any, p: Probe) -> None:
    """Preprocessed tensors must have the probe's channels (a dataset is converted by its data config)."""
    images = getattr(task, "images", None)
    want = int(p.data_config["input_size"][0])
    if isinstance(images, torch.Tensor) and images.dim() == 4 and int(images.shape[1]) != want:
        raise DataError(f"images have {int(images.shape[1])} channel(s), the probe {p.name} takes {want}: convert "
                        f"them (e.g. x.expand(-1, {want}, -1, -1) for grayscale), or pass a dataset, which t2v-hub "
                        "converts")


# Set by the pipeline itself, never by fisher_options.
_PIPELINE_OWNED = {"model", "loader", "params", "generator", "device", "loss_fn", "init_hessian"}


def _check_fisher_options(method: str, options: dict[str, Any] | None) -> None:
    """Unknown ``fisher_options`` are refused before any work, against the method the caller named.

    (montecarlo's labels are drawn here and its per-sample pass is the empirical estimator's, and
    the variational estimator takes ``**kwargs``: neither would name the problem well, or at all.)
    """
    if not options:
        return
    if not isinstance(options, dict):
        raise FisherError(f"fisher_options must be a dict of estimator options, got {type(options).__name__}")
    if method in ("montecarlo", "empirical"):
        from .fisher.persample import PERSAMPLE_OPTIONS as allowed
    elif method == "batch":
        from .fisher.batch import BATCH_OPTIONS as allowed
    else:
        import inspect

        from .fisher.variational import estimate_variational

        params = inspect.signature(estimate_variational).parameters.values()
        allowed = {p.name for p in params if p.kind is p.KEYWORD_ONLY} - _PIPELINE_OWNED | {"init"}
    unknown = sorted(set(options) - set(allowed) - {"likelihood"})
    if unknown or "likelihood" in options:
        bad = unknown or ["likelihood"]
        raise FisherError(f"fisher_options {bad} are not options of method={method!r}"
                          + (" (the likelihood follows the labels)" if bad == ["likelihood"] else "")
                          + f"; valid: {sorted(set(allowed) - {'likelihood'})}")


def _fisher(run: EmbedRun, feats: torch.Tensor) -> FisherResult:
    """The configured estimator on this process's shard, then the exact cross-process sum."""
    from .fisher import estimate

    cfg = run.config.fisher
    g_fisher = torch.Generator().manual_seed(run.config.seed + 1)
    options = dict(cfg.options)
    options["likelihood"] = LIKELIHOOD[run.label_kind]
    if cfg.method in ("montecarlo", "empirical"):
        # The embedding keeps per-filter means only: let the per-sample pass form just those
        # where that is cheaper (conv.filter_sums_cheaper). Exact either way.
        options.setdefault("filter_means", True)
    if cfg.method == "montecarlo":
        with torch.no_grad():
            logits = run.probe.logits_from_features(feats.to(run.device)).float().cpu()
        return reduce_result(run.montecarlo(logits, g_fisher, options), run.dist)
    if cfg.method == "variational":
        init = options.pop("init", "reference")
        if init not in ("reference", "laplace"):
            raise FisherError(f"variational init must be 'reference' or 'laplace', got {init!r}")
        if init == "laplace":
            # Warm start at the quadratic model's optimum, from the montecarlo Fisher of the
            # same images (one extra per-sample pass; see fisher/variational.py).
            with torch.no_grad():
                logits = run.probe.logits_from_features(feats.to(run.device)).float().cpu()
            mc = run.montecarlo(logits, torch.Generator().manual_seed(run.config.seed + 2),
                                {"likelihood": options["likelihood"]})
            options["init_hessian"] = mc.per_param
    if run.label_kind == "single":
        options.pop("likelihood")  # categorical is every estimator's default
    labels = run.labels.float() if run.label_kind != "single" else run.labels
    result = estimate(
        run.probe.model, run.batches(labels, f"Fisher {cfg.method}"), cfg.method,
        params=run.probe.measured_params(), mc_samples=cfg.mc_samples, generator=g_fisher,
        autocast_dtype=run.autocast_dtype, device=run.device, **options,
    )
    if cfg.method == "variational":
        _warn_if_unconverged(result.config)
    return reduce_result(result, run.dist)


def _label_fisher(run: EmbedRun, batch_size: int) -> tuple[FisherResult, dict[str, float], dict[str, Any]]:
    """Head fit on pooled features, then the configured estimator (one label, or a vector, per image)."""
    t0, p, kind = time.perf_counter(), run.probe, run.label_kind
    # Each process embeds its shard; every process then fits the same head on all features.
    feats = gather_rows(_batched_features(p, run.images.select(run.shard), batch_size, run.device, run.quiet,
                                          run.autocast_dtype), run.dist)
    head_stats = fit_head(p.head(), feats.to(run.device), run.labels.to(run.device), run.config.head,
                          torch.Generator().manual_seed(run.config.seed),
                          multilabel=kind == "multi", regression=kind == "regression")
    record = {"seconds_features_and_head": time.perf_counter() - t0}
    _log(f"Fisher ({run.config.fisher.method}) over {run.images.shape[0]} images...", run.quiet)
    result = _fisher(run, feats)
    if kind == "single" and all(not bool(v.any()) for v in result.per_param.values()):
        _refuse_if_saturated(run, feats)
    return result, head_stats, record


def _refuse_if_saturated(run: EmbedRun, feats: torch.Tensor) -> None:
    """An all-zero Fisher from a head that is certain of every image: say so, not "no weight matters"."""
    with torch.no_grad():
        logits = run.probe.logits_from_features(feats.to(run.device)).float().cpu()
    if bool((logits.softmax(1).max(1).values == 1.0).all()):
        raise FisherError(
            f"the fitted head predicts every image with probability 1.0 (logits up to {float(logits.abs().max()):.3g},"
            f" features up to {float(feats.abs().max()):.3g}), so no sampled label has a gradient and the Fisher is"
            " exactly zero: the probe's features are far out of scale (a random-init probe?); use pretrained weights"
        )


def _artifact(run: EmbedRun, task: Any, result: FisherResult, head_stats: dict[str, float],
              timings: dict[str, float], record: dict[str, Any]) -> Task2VecEmbedding:
    p, cfg = run.probe, run.config
    meta = {k: v for k, v in task.metadata.items() if v is not None}
    return Task2VecEmbedding.create(
        p.layout.reduce(result.per_param),
        probe=p.name,
        weights=p.config.pretrained,
        weights_sha256=p.config.weights_sha256,
        layout_hash=p.layout.hash(),
        include_norm=cfg.include_norm,
        input_size=list(p.data_config["input_size"]),
        method=cfg.fisher.method,
        method_config=result.config,
        fisher_options=dict(cfg.fisher.options),  # as asked (method_config: as run)
        head_config=asdict(cfg.head),
        mc_samples=cfg.fisher.mc_samples,
        num_samples=result.num_samples,
        num_classes=int(record.get("dense_outputs", p.num_classes)),
        label_kind=run.label_kind,
        seed=cfg.seed,
        max_samples=cfg.max_samples,
        memory_format=run.memory_format,  # an execution detail like the device: values change by rounding only
        **cfg.to_metadata(),
        **{k: v for k, v in meta.items() if k not in {"num_classes", "num_samples", "seed", "label_kind"}},
        **{k: v for k, v in record.items() if k != "dense_outputs"},
        **{k: round(v, 6) for k, v in head_stats.items()
           if k in ("head_train_accuracy", "head_train_r2", "head_train_pixel_accuracy")},
        **{k: round(v, 3) for k, v in timings.items()},
    )


def _check_args(method: str, max_samples: Any, seed: Any, mc_samples: Any,
                batch_size: Any) -> tuple[int | None, int, int, int]:
    """Before any data is read: a float or a string fails here naming the parameter, not deep in torch.
    Returns the counts as plain ints (numpy integers are accepted)."""
    if method not in C.FISHER_METHODS:
        raise FisherError(f"unknown method {method!r}; choose one of {', '.join(C.FISHER_METHODS)}")
    return (check_optional_count("max_samples", max_samples, 1, error=DataError),
            check_count("seed", seed, 0), check_count("mc_samples", mc_samples, 1, error=FisherError),
            check_count("batch_size", batch_size, 1, error=FisherError))


def _check_kinds(head: Any, include_norm: Any, cache: Any, quiet: Any, pretrained: Any, checkpoint: Any = None,
                 stats: Any = None, autocast_dtype: Any = None) -> torch.dtype | None:
    """Switches are bools (``include_norm="no"`` is truthy), ``head`` a HeadConfig, ``checkpoint`` a path
    and ``stats`` a dict, each named if not (else a TypeError from ``os.stat`` or ``.update``, late).
    Returns ``autocast_dtype`` as a dtype, parsed as fisher.estimate parses it ("bf16" too): before the
    features pass autocasts with it."""
    if head is not None and not isinstance(head, HeadConfig):
        raise T2VError(f"head={type(head).__name__}: expected a t2v_hub.config.HeadConfig or None")
    check_path("checkpoint", checkpoint, expected="the path of a .safetensors/.pth file")
    if stats is not None and not isinstance(stats, dict):
        raise T2VError(f"stats={type(stats).__name__}: expected a dict to fill in, or None")
    for name, value in (("include_norm", include_norm), ("cache", cache), ("quiet", quiet)):
        check_flag(name, value)
    check_flag("pretrained", pretrained, optional=True)
    return parse_dtype(autocast_dtype)


def embed(
    dataset: Any,
    probe: str | nn.Module | Probe = C.DEFAULT_PROBE,
    method: str = C.DEFAULT_FISHER_METHOD,
    *,
    max_samples: int | None = None,
    seed: int = 0,
    mc_samples: int = 1,
    batch_size: int = C.DEFAULT_BATCH_SIZE,
    head: HeadConfig | None = None,
    fisher_options: dict[str, Any] | None = None,
    include_norm: bool = False,
    input_size: int | None = None,
    pretrained: bool | None = None,
    checkpoint: str | None = None,
    device: str | torch.device | None = None,
    autocast_dtype: torch.dtype | None = None,
    cache: bool = False,
    quiet: bool = True,
    stats: dict[str, Any] | None = None,
    **data_options: Any,
) -> Task2VecEmbedding:
    """Embed a classification or regression task with TASK2VEC.

    ``dataset`` is anything the data layer accepts (hub id, local folder or files,
    a ``datasets`` object), a ``(images, labels)`` tensor pair already preprocessed
    for the probe, or a :class:`TensorTask`. ``data_options`` go to
    :func:`t2v_hub.data.load_task` (split, config, revision, columns...). The
    :class:`EmbedConfig` of the run is recorded in the result's metadata
    (``EmbedConfig.from_metadata(emb.metadata)``). ``checkpoint`` loads the probe's weights
    from a local ``.safetensors``/``.pth`` file (its sha256 is recorded).
    """
    max_samples, seed, mc_samples, batch_size = _check_args(method, max_samples, seed, mc_samples, batch_size)
    _check_fisher_options(method, fisher_options)
    autocast_dtype = _check_kinds(head, include_norm, cache, quiet, pretrained, checkpoint, stats, autocast_dtype)
    t0 = time.perf_counter()
    config = EmbedConfig(
        probe=probe if isinstance(probe, str) else getattr(getattr(probe, "config", None), "name", type(probe).__name__),
        max_samples=max_samples, seed=seed, include_norm=include_norm, input_size=input_size,
        head=head or HeadConfig(),
        fisher=FisherConfig(method=method, mc_samples=mc_samples, batch_size=batch_size,
                            options=dict(fisher_options or {})),
    )
    # "auto": CUDA when present, else the CPU.
    dev = pick_device(device)
    task = as_task(dataset, max_samples=max_samples, seed=seed, data_options=data_options)
    label_kind = getattr(task, "label_kind", "single")
    if label_kind == "regression" and method == "variational":
        raise FisherError("the variational estimator has no Gaussian likelihood for regression targets;"
                          " use method='montecarlo', 'empirical' or 'batch'")
    dense = label_kind in DENSE_KINDS
    if dense:
        check_method(method)
    p = _probe_for(probe, None if dense else int(task.num_classes), config, pretrained, checkpoint)
    _check_channels(task, p)
    p.to(dev)

    key = cache_key(task.metadata, p, config) if cache else None
    folder = cache_subdir("embeddings") if key else None  # unusable: a warning now, and no cache
    cache_path = folder / f"{key}.safetensors" if folder is not None else None
    if cache_path is not None and cache_path.is_file():
        _log(f"cache hit: {cache_path}", quiet)
        if stats is not None:
            stats.update(cached=True, seconds=time.perf_counter() - t0)
        return Task2VecEmbedding.load(cache_path)

    images, labels = task.image_rows(p.data_config, progress=not quiet), task.labels
    n = int(images.shape[0])
    if n == 0:
        raise DataError("no usable samples left after filtering; check the dataset and on_bad_image")
    dist = dist_info()
    if dist.enabled and method == "variational":
        raise FisherError("the variational estimator is not data-parallel; run it in a single process")
    run = EmbedRun(p, config, label_kind, images, labels, shard_indices(n, dist), dist, dev, autocast_dtype, quiet)

    _log(f"features of {n} images with {p.name}...", quiet)
    t_feat = time.perf_counter()
    if dense:  # decoder fit and Fisher through it: t2v_hub/dense.py
        result, head_stats, record = dense_fisher(run)
    else:
        result, head_stats, record = _label_fisher(run, batch_size)
    t_fisher = t_feat + record.pop("seconds_features_and_head")
    seconds = time.perf_counter() - t0
    emb = _artifact(run, task, result, head_stats,
                    {"seconds_features_and_head": t_fisher - t_feat, "seconds_total": seconds}, record)
    if stats is not None:
        stats.update(cached=False, seconds=seconds, num_samples=n, num_classes=p.num_classes, **head_stats)
    if cache_path is not None and dist.is_main:
        emb.save(cache_path)
    return emb


__all__ = ["TensorTask", "cache_key", "embed"]
