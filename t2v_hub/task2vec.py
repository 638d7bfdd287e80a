"""The embedding pipeline: data -> probe -> head fit on cached features -> Fisher -> vector.

``embed`` is the one call the CLI, the hub commands, ``recommend`` and AutoML
users go through. Every random choice is drawn from generators seeded by ``seed``
so the same inputs give bit-identical embeddings on the CPU.

Regression tasks (label kind ``"regression"``: a float label column, or lists of
``k`` floats, standardised per dimension by the data layer) run the same pipeline
with a ``k``-output head fit by mean squared error, and the Fisher of a
unit-variance Gaussian likelihood (``likelihood="gaussian"``): ``montecarlo``
draws targets ``y = f(x) + N(0, 1)`` from the head's outputs, ``empirical`` uses
the standardised targets, ``batch`` works as for classification; ``variational``
has no Gaussian loss and refuses regression tasks.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import constants as C
from .config import EmbedConfig, FisherConfig, HeadConfig
from .embedding import Task2VecEmbedding
from .errors import DataError, FisherError
from .head import fit_head
from .probes import Probe, create_probe


class TensorTask:
    """A task given as preprocessed tensors (images already normalised for the probe).

    ``label_kind="regression"``: ``labels`` are float targets, ``(N,)`` or ``(N, k)``,
    standardised here per dimension (raw values kept in ``raw_labels``, means/stds in
    ``metadata``); otherwise int64 class ids ``(N,)`` or a multi-hot ``(N, C)``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        metadata: dict[str, Any] | None = None,
        label_kind: str | None = None,
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise DataError(f"{images.shape[0]} images but {labels.shape[0]} labels; pass one label per image")
        if images.shape[0] == 0:
            raise DataError("the task has no samples; pass a non-empty dataset")
        if label_kind not in (None, "single", "multi", "regression"):
            raise DataError(f"label_kind must be 'single', 'multi' or 'regression', got {label_kind!r}")
        self.raw_labels: torch.Tensor | None = None
        target_meta: dict[str, Any] = {}
        if label_kind == "regression":
            from .data.columns import standardize

            raw = labels.detach().to(torch.float64).reshape(labels.shape[0], -1)
            bad = (~torch.isfinite(raw)).any(1).nonzero().flatten().tolist()
            if bad:
                raise DataError(f"row {bad[0]}: regression target {raw[bad[0]].tolist()} is not finite; drop that row")
            labels, mean, std = standardize(raw, "labels")
            self.raw_labels = raw
            target_meta = {"target_dim": int(raw.shape[1]), "target_mean": json.dumps(mean),
                           "target_std": json.dumps(std)}
        self.images, self.labels = images, labels
        self.label_kind = label_kind or ("multi" if labels.dim() > 1 else "single")
        self.num_samples = int(images.shape[0])
        if self.label_kind == "regression":
            self.num_classes = int(labels.shape[1])
        else:
            self.num_classes = int(labels.shape[1]) if labels.dim() > 1 else int(labels.max()) + 1
            present = int((labels.sum(0) > 0).sum()) if labels.dim() > 1 else int(torch.unique(labels).numel())
            if present < 2:
                raise DataError(f"the task has {present} class; TASK2VEC needs at least 2 classes with samples")
        fp = hashlib.sha256(images.contiguous().numpy().tobytes() + labels.contiguous().numpy().tobytes()).hexdigest()
        self.metadata: dict[str, Any] = {"dataset_id": "<tensors>", "fingerprint": fp[:16], **(metadata or {})}
        self.metadata.setdefault("num_classes", self.num_classes)
        self.metadata.setdefault("num_samples", self.num_samples)
        self.metadata.setdefault("label_kind", self.label_kind)
        self.metadata.update(target_meta)

    def tensors(self, transform_cfg: dict[str, Any], **_: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images, self.labels


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _batched_features(
    probe: Probe, images: torch.Tensor, batch_size: int, device: torch.device, quiet: bool = True
) -> torch.Tensor:
    out = []
    dummy = torch.zeros(images.shape[0])
    with torch.no_grad():
        for x, _ in _TensorBatches(images, dummy, batch_size, None if quiet else "features"):
            out.append(probe.features(x.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out)


class _TensorBatches:
    """Re-iterable batches over pre-decoded tensors; with ``desc`` a progress bar (img/s) on stderr.

    Re-iterable (not a generator) because the variational estimator makes several
    passes over the data: a one-shot generator silently ended it after the first.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, desc: str | None = None) -> None:
        self.images, self.labels, self.batch_size, self.desc = images, labels, batch_size, desc

    def __iter__(self):
        images, labels, batch_size = self.images, self.labels, self.batch_size
        bar = None
        if self.desc is not None:
            from tqdm.auto import tqdm

            bar = tqdm(total=int(images.shape[0]), desc=self.desc, unit="img", file=sys.stderr, leave=False)
        try:
            for i in range(0, images.shape[0], batch_size):
                yield images[i : i + batch_size], labels[i : i + batch_size]
                if bar is not None:
                    bar.update(min(batch_size, images.shape[0] - i))
        finally:
            if bar is not None:
                bar.close()

    def __len__(self) -> int:
        return (int(self.images.shape[0]) + self.batch_size - 1) // self.batch_size


def _load(dataset: Any, *, max_samples: int | None, seed: int, data_options: dict[str, Any]) -> Any:
    if isinstance(dataset, TensorTask):
        task = dataset
    elif isinstance(dataset, tuple) and len(dataset) == 2 and isinstance(dataset[0], torch.Tensor):
        task = TensorTask(dataset[0], dataset[1])
    else:
        from .data import load_task

        return load_task(dataset, max_samples=max_samples, seed=seed, **data_options)
    if max_samples is not None:
        if max_samples <= 0:
            raise DataError(f"--max-samples must be positive, got {max_samples}")
        # Shuffle before truncating: the first N rows of a dataset are rarely a fair sample.
        regression = task.label_kind == "regression"
        if regression and max_samples < 2:
            raise DataError(f"--max-samples {max_samples} is below 2; a regression task needs at least 2 samples")
        if not regression and max_samples < task.num_classes:
            raise DataError(
                f"--max-samples {max_samples} is below the number of classes ({task.num_classes}); "
                "use at least one sample per class"
            )
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(task.num_samples, generator=g)[:max_samples]
        if regression:
            assert task.raw_labels is not None  # standardised again over the kept samples
            task = TensorTask(task.images[idx], task.raw_labels[idx], {**task.metadata, "num_samples": len(idx)},
                              label_kind="regression")
        else:
            task = TensorTask(task.images[idx], task.labels[idx], {**task.metadata, "num_samples": len(idx)})
    return task


def _montecarlo_shard_invariant(
    p: Probe,
    feats: torch.Tensor,
    images: torch.Tensor,
    shard: torch.Tensor,
    mc_samples: int,
    generator: torch.Generator,
    batch_size: int,
    autocast_dtype: torch.dtype | None,
    dev: torch.device,
    multilabel: bool,
    options: dict[str, Any],
    quiet: bool = True,
    regression: bool = False,
):
    """True-Fisher estimate whose label draws do not depend on how samples are sharded.

    The model's predictive distribution for every sample is ``head(features)`` (the
    backbone is frozen and in eval mode), so all ``mc_samples`` labels of all N
    samples are drawn up front from one seeded generator; each draw then runs the
    per-sample estimator with those labels. One process or eight, the same samples
    get the same labels, and the reduced sums equal the single-process result.
    Regression draws are ``y = f + N(0, 1)`` (``sample_labels(..., "gaussian")``,
    ``(mc_samples, N, k)``), with ``options["likelihood"] == "gaussian"``.
    """
    from .fisher import estimate, sample_labels
    from .fisher.result import FisherResult

    with torch.no_grad():
        logits = p.logits_from_features(feats.to(dev)).float().cpu()
    if regression:
        draws = sample_labels(logits, mc_samples, generator, "gaussian")
    elif multilabel:
        draws = torch.bernoulli(torch.sigmoid(logits)[None].expand(mc_samples, -1, -1).contiguous(), generator=generator)
    else:
        draws = torch.multinomial(torch.softmax(logits, 1), mc_samples, replacement=True, generator=generator).t()
    sums: dict[str, torch.Tensor] | None = None
    config: dict[str, Any] = {}
    for k in range(mc_samples):
        r = estimate(
            p.model,
            _TensorBatches(images[shard], draws[k][shard], batch_size, None if quiet else f"Fisher montecarlo {k + 1}/{mc_samples}"),
            "empirical",
            params=p.measured_params(), autocast_dtype=autocast_dtype, device=dev, **options,
        )
        assert r.sums is not None
        sums = r.sums if sums is None else {n: sums[n] + r.sums[n] for n in sums}
        config = r.config
    assert sums is not None
    # Mean over the draws of each sample's squared score: divide the sums by K here.
    sums = {n: v / mc_samples for n, v in sums.items()}
    config = {**config, "method": "montecarlo", "mc_samples": mc_samples,
              "label_sampling": "pipeline: all labels drawn up front from head(features) with the seeded generator"}
    return FisherResult.from_sums(sums, len(shard), "montecarlo", config)


def _with_outputs(p: Probe, outputs: int) -> Probe:
    """``p`` with its head reset to ``outputs`` outputs, zero-initialised and frozen like create_probe's."""
    p.adapter.reset_head(p.model, outputs)
    for m in p.head().modules():
        if isinstance(m, nn.Linear):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for q in p.model.parameters():
        q.requires_grad_(False)
    return Probe(p.model, p.config, outputs, p.data_config)


def _warn_if_unconverged(config: dict[str, Any]) -> None:
    """Say so when the variational precisions were still moving at the end (see fisher/variational.py)."""
    import warnings

    from .fisher.variational import UNCONVERGED_FRACTION

    late = config.get("late_change_fraction")
    if late is not None and late > UNCONVERGED_FRACTION:
        warnings.warn(
            f"variational Fisher not converged: {100 * late:.0f}% of the log-precision change came in the last "
            f"10% of {config.get('steps_done')} steps; pass fisher_options={{'steps': N}} (CLI: --fisher-steps) "
            "with a larger N",
            RuntimeWarning,
            stacklevel=3,
        )


def cache_key(task_meta: dict[str, Any], probe: Probe, config: EmbedConfig) -> str | None:
    fp = task_meta.get("fingerprint") or task_meta.get("dataset_revision")
    if not fp:
        return None
    payload = json.dumps(
        # All of the task's metadata, not just its identity: the same dataset read with another
        # label column, config or --on-bad-image is another task and must not hit this entry.
        {"data": {k: str(v) for k, v in sorted(task_meta.items())},
         "probe": probe.config.weights_sha256, "layout": probe.layout.hash(), "config": config.to_dict()},
        sort_keys=True, default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


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
    :func:`t2v_hub.data.load_task` (split, config, revision, columns...).

    Regression targets (a float label column, or ``TensorTask(..., label_kind=
    "regression")``) use a ``k``-output head fit by MSE on the standardised targets
    and the unit-variance Gaussian Fisher; metadata records ``label_kind="regression"``,
    ``num_classes`` = k, ``head_train_r2`` and the targets' means/stds. The
    ``variational`` method refuses them (:class:`FisherError`).
    """
    if method not in C.FISHER_METHODS:
        raise FisherError(f"unknown method {method!r}; choose one of {', '.join(C.FISHER_METHODS)}")
    t0 = time.perf_counter()
    head_cfg = head or HeadConfig()
    fisher_cfg = FisherConfig(method=method, mc_samples=mc_samples, batch_size=batch_size, options=dict(fisher_options or {}))
    config = EmbedConfig(
        probe=probe if isinstance(probe, str) else getattr(getattr(probe, "config", None), "name", type(probe).__name__),
        max_samples=max_samples, seed=seed, include_norm=include_norm, input_size=input_size,
        head=head_cfg, fisher=fisher_cfg,
    )
    dev = torch.device(device) if device is not None else torch.device("cpu")

    _log("loading data...", quiet)
    task = _load(dataset, max_samples=max_samples, seed=seed, data_options=data_options)
    label_kind = getattr(task, "label_kind", "single")
    multilabel = label_kind == "multi"
    regression = label_kind == "regression"
    if regression and method == "variational":
        raise FisherError(
            "the variational estimator has no Gaussian likelihood for regression targets;"
            " use --method montecarlo, empirical or batch"
        )
    num_classes = int(task.num_classes)
    if isinstance(probe, Probe):
        if probe.num_classes != num_classes:
            raise DataError(f"probe has {probe.num_classes} classes but the task has {num_classes}")
        p = Probe(__import__("copy").deepcopy(probe.model), probe.config, num_classes, dict(probe.data_config))
    else:
        # create_probe wants 2+ classes; a regression head may have one output: rebuild it below.
        p = create_probe(
            probe, max(num_classes, 2), include_norm=include_norm, input_size=input_size, pretrained=pretrained
        )
        if p.num_classes != num_classes:
            p = _with_outputs(p, num_classes)
    p.to(dev)

    key = cache_key(task.metadata, p, config) if cache else None
    cache_path = Path(C.cache_dir()) / "embeddings" / f"{key}.safetensors" if key else None
    if cache_path is not None and cache_path.is_file():
        _log(f"cache hit: {cache_path}", quiet)
        if stats is not None:
            stats.update(cached=True, seconds=time.perf_counter() - t0)
        return Task2VecEmbedding.load(cache_path)

    images, labels = task.tensors(p.data_config, progress=not quiet)
    n = int(images.shape[0])
    if n == 0:
        raise DataError("no usable samples left after filtering; check the dataset and --on-bad-image")

    from .distributed import dist_info, gather_rows, reduce_sum, shard_indices

    dist = dist_info()
    if dist.enabled and method == "variational":
        raise FisherError("the variational estimator is not data-parallel; run it in a single process")
    shard = shard_indices(n, dist)
    _log(f"features of {n} images with {p.name}...", quiet)
    t_feat = time.perf_counter()
    # Each process embeds its shard; every process then fits the same head on all features.
    feats = gather_rows(_batched_features(p, images[shard], batch_size, dev, quiet), dist)
    g_head = torch.Generator().manual_seed(seed)
    head_stats = fit_head(
        p.head(), feats.to(dev), labels.to(dev), head_cfg, g_head, multilabel=multilabel, regression=regression
    )
    t_fisher = time.perf_counter()

    _log(f"Fisher ({method}) over {n} images...", quiet)
    from .fisher import estimate

    g_fisher = torch.Generator().manual_seed(seed + 1)
    options = dict(fisher_cfg.options)
    if multilabel:
        options["likelihood"] = "bernoulli"
    elif regression:
        options["likelihood"] = "gaussian"
    labels_f = labels.float() if multilabel or regression else labels
    if method == "montecarlo":
        result = _montecarlo_shard_invariant(
            p, feats, images, shard, mc_samples, g_fisher, batch_size, autocast_dtype, dev, multilabel, options, quiet,
            regression=regression,
        )
    else:
        if method == "variational":
            init = options.pop("init", "reference")
            if init not in ("reference", "laplace"):
                raise FisherError(f"variational init must be 'reference' or 'laplace', got {init!r}")
            if init == "laplace":
                # Warm start at the quadratic model's optimum, from the montecarlo Fisher of the
                # same images (one extra per-sample pass; see fisher/variational.py).
                mc = _montecarlo_shard_invariant(
                    p, feats, images, shard, mc_samples, torch.Generator().manual_seed(seed + 2), batch_size,
                    autocast_dtype, dev, multilabel, {k: v for k, v in options.items() if k == "likelihood"}, quiet,
                )
                options["init_hessian"] = mc.per_param
        result = estimate(
            p.model, _TensorBatches(images[shard], labels_f[shard], batch_size, None if quiet else f"Fisher {method}"),
            method,
            params=p.measured_params(), mc_samples=mc_samples, generator=g_fisher,
            autocast_dtype=autocast_dtype, device=dev, **options,
        )
    if method == "variational":
        _warn_if_unconverged(result.config)
    if dist.enabled:
        from .fisher.result import FisherResult

        assert result.sums is not None
        sums = {k: reduce_sum(v, dist) for k, v in result.sums.items()}
        count = int(reduce_sum(torch.tensor([float(result.num_samples)]), dist).item())
        result = FisherResult.from_sums(sums, count, result.method, {**result.config, "world_size": dist.world_size})
    vector = p.layout.reduce(result.per_param)
    seconds = time.perf_counter() - t0
    meta = {k: v for k, v in task.metadata.items() if v is not None}
    emb = Task2VecEmbedding.create(
        vector,
        probe=p.name,
        weights=p.config.pretrained,
        weights_sha256=p.config.weights_sha256,
        layout_hash=p.layout.hash(),
        include_norm=include_norm,
        input_size=list(p.data_config["input_size"]),
        method=method,
        method_config=result.config,
        fisher_options=dict(fisher_cfg.options),  # as asked (method_config: as run)
        head_config=asdict(head_cfg),
        mc_samples=mc_samples,
        num_samples=result.num_samples,
        num_classes=num_classes,
        label_kind=label_kind if regression else ("multi" if multilabel else "single"),
        seed=seed,
        max_samples=max_samples,
        **{k: v for k, v in meta.items() if k not in {"num_classes", "num_samples", "seed", "label_kind"}},
        **{k: round(v, 6) for k, v in head_stats.items() if k in ("head_train_accuracy", "head_train_r2")},
        seconds_features_and_head=round(t_fisher - t_feat, 3),
        seconds_total=round(seconds, 3),
    )
    if stats is not None:
        stats.update(cached=False, seconds=seconds, num_samples=n, num_classes=num_classes, **head_stats)
    if cache_path is not None and dist.is_main:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        emb.save(cache_path)
    return emb


def trivial_embedding(
    probe: str = C.DEFAULT_PROBE,
    method: str = C.DEFAULT_FISHER_METHOD,
    *,
    num_samples: int = 64,
    input_size: int | None = None,
    include_norm: bool = False,
    pretrained: bool | None = None,
    cache: bool = True,
    seed: int = 0,
) -> Task2VecEmbedding:
    """The probe's embedding of a task that carries no information (``t0``).

    Definition: seeded standard-normal images in the probe's normalised input space,
    two classes, labels drawn uniformly at random independently of the images, run
    through the *same* pipeline and estimator as real tasks. Nothing about the
    labels can be learned, so this is the Fisher a probe shows for "no task"; it is
    non-zero (a zero vector has no direction and makes the cosine undefined), and
    it depends only on the probe, its weights and the method, so it is computed
    once per (probe, weights, layout, method) and cached.
    """
    size = input_size
    p = create_probe(probe, 2, include_norm=include_norm, input_size=input_size, pretrained=pretrained)
    c, h, w = p.data_config["input_size"]
    key = hashlib.sha256(
        f"{p.config.weights_sha256}|{p.layout.hash()}|{method}|{num_samples}|{h}x{w}|{seed}".encode()
    ).hexdigest()[:24]
    path = Path(C.cache_dir()) / "trivial" / f"{key}.safetensors"
    if cache and path.is_file():
        return Task2VecEmbedding.load(path)
    g = torch.Generator().manual_seed(10_000 + seed)
    images = torch.randn(num_samples, c, h, w, generator=g)
    labels = torch.randint(0, 2, (num_samples,), generator=g)
    labels[:2] = torch.tensor([0, 1])  # both classes present
    task = TensorTask(images, labels, {"dataset_id": "<trivial>", "trivial": True})
    emb = embed(task, probe, method, seed=seed, input_size=size, include_norm=include_norm, pretrained=pretrained,
                head=replace(HeadConfig(), epochs=1, draws_per_epoch=max(256, num_samples)))
    emb.metadata["kind"] = "trivial"
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        emb.save(path)
    return emb


def trivial_for(embedding: Task2VecEmbedding, **kwargs: Any) -> Task2VecEmbedding:
    """The trivial embedding matching an existing embedding's probe, input size and method."""
    size = embedding.config("input_size") if "input_size" in embedding.metadata else None
    input_size = int(size[-1]) if isinstance(size, list) else None
    include_norm = embedding.metadata.get("include_norm", "false") == "true"
    t0 = trivial_embedding(embedding.probe, embedding.method, input_size=input_size, include_norm=include_norm, **kwargs)
    embedding.check_compatible(t0)
    return t0


__all__ = ["TensorTask", "embed", "trivial_embedding", "trivial_for"]
