"""Score candidate models on a dataset by the transferability of their own features.

:func:`score_models` is for a user who already has candidates (``t2v-hub score``),
and the second stage of ``recommend --rerank``. Each model is any name
``timm.create_model`` takes (a timm name, ``hf-hub:org/name``,
``local-dir:/path``). Its features are the input of its classifier
(``forward_head(forward_features(x), pre_logits=True)``), computed on images
preprocessed with the model's *own* data config (input size, mean/std,
interpolation, crop): a shared input size silently flips rankings, because every
backbone was trained at its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import check_count, check_flag, check_names, check_optional_count
from ..devices import pick_device
from ..errors import T2VError
from .transferability import TransferabilityError, get_score, score_features


class ModelLoadError(T2VError):
    """A candidate model cannot be built, has no classifier head, or is too large."""


@dataclass(frozen=True)
class ModelScore:
    """One candidate's score (higher = better) and what it cost."""

    rank: int
    name: str
    metric: str
    score: float
    seconds: float
    forward_passes: int  # images through the model
    input_size: list[int]
    feature_dim: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_model(name: str, *, pretrained: bool | None = None, max_model_mb: float | None = None) -> nn.Module:
    """``timm.create_model(name)`` in eval mode, with its weights; refuses headless or oversized models.

    ``pretrained=None``: load weights (hub and local names always carry them; a ``test_*``
    timm model has none and is built with random weights).
    """
    import timm

    use = pretrained if pretrained is not None else not name.split("/")[-1].startswith("test_")
    if name.startswith("local-dir:"):
        from ..probes.names import local_dir_problem

        given = name[len("local-dir:"):]
        what = local_dir_problem(given)
        if what is not None:
            raise ModelLoadError(f"model {name!r}: {given or 'the path'} {what}; pass local-dir:/path/to/model, "
                                 "a folder timm's save_for_hf wrote")
        folder = Path(given).expanduser()
        missing = [f for f in ("config.json", "model.safetensors") if not (folder / f).is_file()]
        if missing:
            raise ModelLoadError(f"{folder} holds no timm weights (missing {', '.join(missing)}); "
                                 "save the model with timm's save_for_hf or pick another candidate")
    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")):  # timm takes both spellings of hf-hub
        use = True
    elif not timm.is_model(name):
        raise ModelLoadError(f"model {name!r} is not a timm model name, hf-hub: or local-dir: name; "
                             "see timm.list_models()")
    if use and not name.startswith("local-dir:"):
        from ..probes.names import weights_unreachable

        why = weights_unreachable(name)  # seconds, not huggingface_hub's 30-55 s of retries
        if why is not None:
            fix = "save the model and pass local-dir:PATH" if name.startswith(("hf-hub:", "hf_hub:")) else \
                "pick another candidate"
            raise ModelLoadError(f"{why}, or {fix}")
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=use)
    except Exception as exc:  # timm raises many types for missing files, bad configs, no network
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"cannot build model {name!r}: {first}") from exc
    if getattr(model, "num_classes", 0) in (0, None) or not hasattr(model, "forward_head"):
        raise ModelLoadError(f"model {name!r} has no classifier head: its pre-logit features are undefined; "
                             "pass a timm classifier")
    mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    if max_model_mb is not None and mb > max_model_mb:
        raise ModelLoadError(f"model {name!r} holds {mb:.0f} MB of weights, above max_model_mb={max_model_mb:g}")
    return model.eval()


def model_features(model: nn.Module, task: Any, *, batch_size: int = 32, device: str | torch.device | None = None,
                   progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(features (N, D), the task's labels, input size) with the model's own preprocessing."""
    import timm

    from ..probes.adapters import get_probe_adapter
    from ..probes.memory_format import prefer_channels_last

    adapter = get_probe_adapter(model)  # the probes' own definition of "what the head sees"
    data_config = dict(timm.data.resolve_model_data_config(model))
    images, labels = task.tensors(data_config, progress=progress)
    dev = pick_device(device)
    model = model.to(dev)
    prefer_channels_last(model, images[:1].to(dev))  # as the probe's passes: NHWC on the CPU where it runs
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            x = images[i : i + batch_size].to(dev)
            out.append(adapter.features(model, x).float().cpu())
    feats = torch.cat(out).reshape(images.shape[0], -1)
    return feats, labels, list(data_config["input_size"])


def targets_for(task: Any, labels: torch.Tensor, metric: str) -> torch.Tensor:
    """The targets ``metric`` scores for the task's labels (class ids, or floats for other label kinds)."""
    kind = getattr(task, "label_kind", "single")
    if kind == "single":
        return labels
    if not get_score(metric).regression:
        raise TransferabilityError(f"metric {metric!r} scores single-label classification only; this task's labels "
                                   f"are {kind}: use metric='logme'")
    return labels.float()


def score_model(name: str, task: Any, metric: str, *, rank: int = 0, pretrained: bool | None = None,
                max_model_mb: float | None = None, batch_size: int = 32, device: str | torch.device | None = None,
                progress: bool = False) -> ModelScore:
    """One candidate: build it, run its own preprocessing and forward pass over ``task``, score the features."""
    t0 = time.perf_counter()
    model = load_model(name, pretrained=pretrained, max_model_mb=max_model_mb)
    feats, labels, size = model_features(model, task, batch_size=batch_size, device=device, progress=progress)
    value = score_features(feats, targets_for(task, labels, metric), metric)
    return ModelScore(rank, name, metric, value, round(time.perf_counter() - t0, 3), int(feats.shape[0]), size,
                      int(feats.shape[1]))


def score_models(
    dataset: Any,
    models: Sequence[str],
    *,
    metric: str = "logme",
    max_samples: int | None = None,
    seed: int = 0,
    batch_size: int = 32,
    device: str | torch.device | None = None,
    pretrained: bool | None = None,
    max_model_mb: float | None = None,
    on_model: Callable[[str, int, int], None] | None = None,
    quiet: bool = True,
    **data_options: Any,
) -> list[ModelScore]:
    """Score ``models`` on ``dataset`` by ``metric`` (``logme``, ``hscore``, ``knn``), best first.

    ``dataset`` is anything :func:`t2v_hub.embed` accepts; each image is decoded once per
    distinct preprocessing. ``on_model(name, i, n)`` is called before each model (progress).
    """
    from ..data import as_task

    get_score(metric)  # fail before any download
    if isinstance(models, str):  # one model, not its characters
        models = [models]
    check_max_model_mb(max_model_mb)
    models = check_names("models", models, "model names (timm, hf-hub: or local-dir:)", error=TransferabilityError)
    if not models:
        raise TransferabilityError("no models to score; pass at least one model name")
    check_count("batch_size", batch_size, 1, error=TransferabilityError)
    check_flag("quiet", quiet, error=TransferabilityError)
    check_flag("pretrained", pretrained, optional=True, error=TransferabilityError)
    # As embed checks them: a float or a string would fail in a slice or a comparison, or go unnoticed.
    max_samples = check_optional_count("max_samples", max_samples, 1, error=TransferabilityError)
    seed = check_count("seed", seed, 0, error=TransferabilityError)
    task = as_task(dataset, max_samples=max_samples, seed=seed, data_options=data_options)
    rows = []
    for i, name in enumerate(dict.fromkeys(models)):
        if on_model is not None:
            on_model(name, i, len(models))
        row = score_model(name, task, metric, pretrained=pretrained, max_model_mb=max_model_mb,
                          batch_size=batch_size, device=device, progress=not quiet)
        rows.append(row)
        if not quiet:
            print(f"  {name}: {metric} {row.score:.4f} ({row.seconds:.1f}s)", file=sys.stderr, flush=True)
    rows.sort(key=lambda r: -r.score)
    return [replace(r, rank=k) for k, r in enumerate(rows, 1)]


def check_max_model_mb(max_model_mb: Any) -> None:
    """``max_model_mb`` is None or a positive size, checked before any model is fetched."""
    from ..config import is_finite_real

    if max_model_mb is not None and not (is_finite_real(max_model_mb) and max_model_mb > 0):
        raise ModelLoadError(f"max_model_mb={max_model_mb!r}: expected a positive size in MB, or None for no limit")


__all__ = ["ModelLoadError", "ModelScore", "check_max_model_mb", "load_model", "model_features", "score_model", "score_models",
           "targets_for"]
