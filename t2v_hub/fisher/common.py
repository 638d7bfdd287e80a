"""Argument checks, device and autocast handling shared by the Fisher estimators.

Kept apart from the estimators so :mod:`.persample` and :mod:`.batch` validate and
move data the same way (one message per mistake, wherever it is made).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from ..devices import pick_device
from ..errors import FisherError
from ..probes.layout import filter_parameter_names
from .norm import is_norm


def check_options(options: dict[str, Any], allowed: Iterable[str], method: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise FisherError(f"unknown option(s) {unknown} for method {method!r}; valid: {sorted(allowed)}")


def parse_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    """``autocast_dtype`` as a dtype: accepts torch dtypes and 'bf16'/'bfloat16'/'fp16'/'float16'."""
    if value is None or isinstance(value, torch.dtype):
        if value not in (None, torch.bfloat16, torch.float16):
            raise FisherError(f"autocast_dtype must be bfloat16 or float16, got {value}")
        return value
    table = {
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if str(value).lower() not in table:
        raise FisherError(f"autocast_dtype must be one of {sorted(table)}, got {value!r}")
    return table[str(value).lower()]


def check_positive(name: str, value: Any, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FisherError(f"{name} must be a positive integer, got {value!r}")
    return value


def resolve_params(model: nn.Module, params: list[str] | None) -> list[tuple[str, nn.Module, nn.Parameter]]:
    """(name, owning module, parameter) for each measured weight; FisherError names bad ones."""
    if isinstance(params, str):
        raise FisherError("params must be a list of parameter names, not a single string")
    names = filter_parameter_names(model) if params is None else list(params)
    modules = dict(model.named_modules())
    all_params = dict(model.named_parameters())
    out = []
    for name in dict.fromkeys(names):  # de-duplicate, keep order
        if name not in all_params:
            raise FisherError(f"parameter {name!r} is not a parameter of {type(model).__name__}")
        mod_name, _, attr = name.rpartition(".")
        module = modules.get(mod_name)
        if attr != "weight" or module is None or getattr(module, "weight", None) is not all_params[name]:
            raise FisherError(
                f"parameter {name!r} is not the weight of a Conv/Linear/norm module; only Conv1d/2d/3d, "
                "Linear and norm-scale weights are supported (no biases or raw parameters)"
            )
        if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not is_norm(module):
            raise FisherError(
                f"parameter {name!r} belongs to {type(module).__name__}, not a Conv or Linear layer"
            )
        out.append((name, module, all_params[name]))
    return out


def resolve_device(model: nn.Module, device: torch.device | str | None) -> tuple[nn.Module, torch.device]:
    """The model to run and where. A different ``device`` runs on a deep copy: never ``.to`` the caller's model."""
    first = next(model.parameters(), None)
    here = first.device if first is not None else torch.device("cpu")
    if device is None:
        return model, here
    target = pick_device(device)
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device())
    if target == here:
        return model, here
    return copy.deepcopy(model).to(target), target


def autocast_ctx(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    return (
        torch.autocast(device_type=device.type, dtype=dtype)
        if dtype is not None
        else contextlib.nullcontext()
    )


@contextlib.contextmanager
def requires_grad_only(model: nn.Module, trainable: Iterable[nn.Parameter]) -> Iterator[None]:
    """Temporarily set ``requires_grad`` True on ``trainable`` and False elsewhere; always restored."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    keep = {id(p) for p in trainable}
    try:
        for p, _ in saved:
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def warn_if_training(model: nn.Module) -> None:
    if any(
        m.training for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout))
    ):
        warnings.warn(
            "the probe has BatchNorm/Dropout layers in train mode: samples then interact (batch statistics) "
            "or are randomly perturbed, and the running statistics may change. Call model.eval() first.",
            stacklevel=3,
        )


def iter_batches(
    loader: Iterable[Any], device: torch.device, max_samples: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """(x, y) on ``device``, truncated to ``max_samples`` in total (exactly, mid-batch if needed)."""
    seen = 0
    for batch in loader:
        if isinstance(batch, torch.Tensor):
            x, y = batch, None
        elif isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
            x, y = batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            raise FisherError(f"loader must yield (x, y) tensor pairs, got {type(batch).__name__}")
        if max_samples is not None:
            if seen >= max_samples:
                break
            x = x[: max_samples - seen]
            y = y[: x.shape[0]] if isinstance(y, torch.Tensor) else y
        if x.shape[0] == 0:
            continue
        seen += x.shape[0]
        yield (
            x.to(device, non_blocking=True),
            (y.to(device, non_blocking=True) if isinstance(y, torch.Tensor) else y),
        )
