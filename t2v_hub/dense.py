"""Pixel-wise tasks in the pipeline (supplement 1.1): feature maps -> decoder -> backbone Fisher.

A segmentation mask or a float map per image (see :mod:`t2v_hub.data.dense`) is
embedded like a label: the frozen probe's feature maps are computed once, the
supplement's decoder (:mod:`t2v_hub.probes.decoder`) is fit on them, and the Fisher
of the backbone's weights is taken through backbone + decoder, with a per-pixel
softmax for masks and a unit-variance Gaussian per pixel for float maps; a
sample's log-likelihood is the sum over its pixels. ``montecarlo`` draws every
pixel's label from the decoder's prediction; ``empirical`` uses the stored masks.

Imports the lower floors only; :mod:`t2v_hub.task2vec` calls it.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import torch

from .distributed import gather_rows, reduce_result
from .errors import FisherError
from .fisher.result import FisherResult
from .head import fit_dense_head
from .probes.decoder import DECODER_SPEC, DenseModel, feature_map, make_decoder
from .run import EmbedRun, batched_outputs

DENSE_METHODS = ("montecarlo", "empirical")
_PREFIX = "backbone."


def check_method(method: str) -> None:
    if method not in DENSE_METHODS:
        raise FisherError(
            f"method={method!r} has no pixel-wise likelihood; dense tasks (masks, maps) take"
            f" method='montecarlo' or 'empirical'"
        )


def _feature_maps(run: EmbedRun) -> torch.Tensor:
    model = run.probe.model
    maps = batched_outputs(lambda x: feature_map(model, x), run.images.select(run.shard),
                           run.config.fisher.batch_size, run.device, None if run.quiet else "feature maps",
                           run.autocast_dtype)
    return gather_rows(maps, run.dist)


def dense_fisher(run: EmbedRun) -> tuple[FisherResult, dict[str, float], dict[str, Any]]:
    """Fit the decoder on this run's task and return the backbone Fisher, head stats and the head's record."""
    from .fisher import estimate

    cfg = run.config
    regression = run.label_kind == "dense_regression"
    labels = run.labels
    outputs = int(labels.shape[1]) if regression else int(labels.max()) + 1
    t0 = time.perf_counter()
    feats = _feature_maps(run)
    target = tuple(int(s) for s in labels.shape[-2:])
    decoder = make_decoder(int(feats.shape[1]), outputs, tuple(int(s) for s in feats.shape[-2:]), target, cfg.seed)
    decoder.to(run.device)
    stats = fit_dense_head(decoder, feats.to(run.device), labels.to(run.device), cfg.head,
                           torch.Generator().manual_seed(cfg.seed), regression=regression)
    seconds_head = time.perf_counter() - t0
    model = DenseModel(run.probe.model, decoder).eval()
    options = {k: v for k, v in cfg.fisher.options.items() if k != "likelihood"}
    result = estimate(
        model, run.batches(labels, f"Fisher {cfg.fisher.method}"),
        cfg.fisher.method, params=[_PREFIX + n for n in run.probe.measured_params()],
        mc_samples=cfg.fisher.mc_samples, generator=torch.Generator().manual_seed(cfg.seed + 1),
        likelihood="gaussian" if regression else "categorical", autocast_dtype=run.autocast_dtype,
        device=run.device, **options,
    )
    per_param = {n.removeprefix(_PREFIX): v for n, v in result.per_param.items()}
    sums = None if result.sums is None else {n.removeprefix(_PREFIX): v for n, v in result.sums.items()}
    record = {"dense_head": DECODER_SPEC, "dense_head_sizes": [list(s) for s in decoder.sizes],
              "dense_outputs": outputs, "seconds_features_and_head": seconds_head}
    return reduce_result(replace(result, per_param=per_param, sums=sums), run.dist), stats, record
