"""Exact per-sample diagonal Fisher: ``montecarlo`` (true Fisher) and ``empirical``.

F_jj = 1/N sum_i E_{y ~ p(y|x_i)} [ (d/dw_j  -log p(y|x_i))^2 ]

``montecarlo`` draws ``mc_samples`` labels per input from the model's own predictive
distribution (the true Fisher); ``empirical`` uses the dataset labels.

How it is computed without a loop over samples and without touching the model:

1. Every parameter of the model is temporarily frozen (``requires_grad=False``,
   flags restored in ``finally``) and the *input* batch is made to require grad.
   The autograd graph then contains activations only, so backward computes
   output gradients and no parameter gradient at all: nothing is written to
   ``.grad`` and the weight-gradient GEMMs of a training step are skipped.
2. A forward hook on each measured module keeps its input and registers a tensor
   hook on its output. Tensor hooks receive the gradient w.r.t. the output *as it
   was produced*, even when a later in-place op (``ReLU(inplace=True)``, ``x += s``)
   rewrote that tensor -- asking ``autograd.grad`` for the output tensor itself
   would silently return the gradient after the in-place op.
3. Because the summed loss is a sum of per-sample losses and samples do not interact
   (eval mode), row ``i`` of an output gradient is sample ``i``'s own gradient, and
   :mod:`.linear` / :mod:`.conv` turn (input, output-gradient) into
   ``sum_i G_i**2`` with batched matmuls, in fp32 even under autocast.
4. ``mc_samples`` draws share one forward; each draw is one backward pass
   (``retain_graph``).

Layers called several times in one forward (weight sharing) keep their gradients
until the backward pass ends, then sum the per-call per-sample gradients before
squaring, which is what the per-sample gradient of a shared weight is.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FisherError
from ..probes.layout import filter_parameter_names
from .conv import CONV_BACKENDS, ConvSpec, conv_persample, conv_spec, conv_sq_sum
from .linear import DEFAULT_PAIRWISE_MAX, chunk_for, default_chunk_bytes, linear_persample, linear_sq_sum
from .norm import is_norm, norm_persample, norm_sq_sum
from .result import FisherResult

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")
PERSAMPLE_OPTIONS = ("conv_backend", "likelihood", "max_samples", "pairwise_max_positions")

_LINEAR_FORWARDS = {nn.Linear.forward}
try:  # timm's Linear only adds a torchscript cast; its forward is a plain F.linear.
    from timm.layers.linear import Linear as _TimmLinear

    _LINEAR_FORWARDS.add(_TimmLinear.forward)
except ImportError:  # pragma: no cover
    pass


# ----------------------------------------------------------------------------- helpers shared with batch.py


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
    target = torch.device(device)
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


def sample_labels(
    logits: torch.Tensor,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    likelihood: str = "categorical",
) -> torch.Tensor:
    """Targets drawn from the model's predictive distribution, one leading axis of ``mc_samples``.

    * ``categorical``: logits ``(B, C)`` -> ``(S, B)`` int64 class ids; dense logits
      ``(B, C, *spatial)`` (a pixel-wise softmax over dim 1) -> ``(S, B, *spatial)``, one
      independent class per pixel.
    * ``bernoulli``: ``(B, C)`` logits -> ``(S, B, C)`` {0,1} floats.
    * ``gaussian``: outputs of any shape are the means of unit-variance Gaussians ->
      ``(S, *shape)`` floats ``f + N(0, 1)``.

    Sampling happens on the generator's device (CPU when ``generator`` is None, then with
    torch's global RNG), in fp32, from detached logits -- so the draws depend only on
    the generator state and the logits, and the estimators and tests can reproduce them.
    """
    where = generator.device if generator is not None else torch.device("cpu")
    lg = logits.detach().to(where, torch.float32)
    if likelihood == "categorical":
        if lg.dim() < 2:
            raise FisherError(f"categorical likelihood needs logits shaped (B, C, ...), got {tuple(lg.shape)}")
        # Class axis last, one row per (sample, pixel); for (B, C) logits this is the plain
        # row-wise draw, so classification draws are unchanged by the dense case.
        rows = lg.movedim(1, -1).reshape(-1, lg.shape[1])
        ids = torch.multinomial(torch.softmax(rows, dim=-1), mc_samples, replacement=True, generator=generator)
        return ids.t().reshape(mc_samples, lg.shape[0], *lg.shape[2:]).contiguous()
    if likelihood == "bernoulli":
        probs = torch.sigmoid(lg).expand(mc_samples, *lg.shape)
        return torch.bernoulli(probs, generator=generator)
    if likelihood == "gaussian":
        noise = torch.randn((mc_samples, *lg.shape), generator=generator, device=where, dtype=torch.float32)
        return lg.unsqueeze(0) + noise
    raise FisherError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")


def loss_sum(logits: torch.Tensor, target: torch.Tensor, likelihood: str) -> torch.Tensor:
    """Sum over the batch of each sample's negative log-likelihood (fp32, or fp64 for fp64 models).

    A sample's NLL of a dense output is the sum over its pixels (the pixels are independent
    given the input), so the Fisher is that of the joint pixel-wise model. The Gaussian NLL
    drops the constant ``log(2 pi) / 2``, which has no gradient.
    """
    if logits.dtype != torch.float64:
        logits = logits.float()  # autocast logits (bf16/fp16) are upcast before the log-softmax
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(
            logits, target.to(logits.device, logits.dtype), reduction="sum"
        )
    if likelihood == "gaussian":
        return 0.5 * (target.to(logits.device, logits.dtype) - logits).square().sum()
    return F.cross_entropy(logits, target.to(logits.device), reduction="sum")


def draw_targets(
    logits: torch.Tensor,
    y: torch.Tensor | None,
    labels: str,
    mc_samples: int,
    generator: torch.Generator | None,
    likelihood: str,
) -> torch.Tensor:
    """Targets for each draw, leading axis ``S`` (see :func:`sample_labels`); dataset labels give one draw."""
    if labels == "sampled":
        return sample_labels(logits, mc_samples, generator, likelihood)
    if y is None:
        raise FisherError("dataset labels requested (empirical Fisher) but the loader yields no labels")
    if likelihood in ("bernoulli", "gaussian"):
        if y.shape != logits.shape or not y.dtype.is_floating_point:
            raise FisherError(
                f"{likelihood} likelihood needs float y shaped like the outputs {tuple(logits.shape)}, "
                f"got {y.dtype} {tuple(y.shape)}"
            )
        return y.unsqueeze(0)
    want = (logits.shape[0], *logits.shape[2:])
    if y.dtype.is_floating_point or y.dtype == torch.bool or tuple(y.shape) != want:
        kind = "1-D int64 tensor of class ids" if logits.dim() == 2 else "int64 tensor of per-pixel class ids"
        raise FisherError(
            f"categorical likelihood needs y as a {kind} shaped {want} for logits {tuple(logits.shape)}, "
            f"got {y.dtype} {tuple(y.shape)}"
        )
    return y.unsqueeze(0)


# ----------------------------------------------------------------------------- hooks


class _Tap:
    """Capture of one measured module: inputs in forward, output gradients in backward."""

    def __init__(self, name: str, module: nn.Module, acc: torch.Tensor, settings: dict[str, Any]) -> None:
        self.name = name
        self.module = module
        self.acc = acc  # running sum of squared per-sample gradients
        self.settings = settings
        self.norm = is_norm(module)
        self.spec: ConvSpec | None = (
            None if isinstance(module, nn.Linear) or self.norm else conv_spec(module, name)
        )
        if self.spec is None and not self.norm and type(module).forward not in _LINEAR_FORWARDS:
            raise FisherError(
                f"parameter {name!r} belongs to {type(module).__name__}, whose forward is not a plain "
                "F.linear of its weight; leave it out of `params`."
            )
        self.inputs: list[torch.Tensor] = []
        self.in_versions: list[int] = []
        self.pending: dict[int, torch.Tensor] = {}
        self.constant_output = False
        self.active = True

    def reset(self) -> None:
        self.inputs.clear()
        self.in_versions.clear()
        self.pending.clear()
        self.constant_output = False

    def forward_hook(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        if not self.active:
            return
        a = args[0].detach()  # shares the version counter: in-place edits stay detectable
        self.inputs.append(a)
        self.in_versions.append(a._version)
        if not output.requires_grad:
            self.constant_output = True
            return
        output.register_hook(functools.partial(self._on_grad, len(self.inputs) - 1))

    def _on_grad(self, index: int, grad: torch.Tensor) -> None:
        a = self.inputs[index]
        if a._version != self.in_versions[index]:
            raise FisherError(
                f"the input of {self.name!r} was modified in place after the layer used it; "
                "per-sample gradients would be wrong. Use out-of-place ops before this layer."
            )
        if len(self.inputs) > 1:  # shared layer: sum per-call gradients before squaring (flush)
            self.pending[index] = self.pending[index] + grad if index in self.pending else grad
            return
        self.acc += self._sq_sum(a, grad)

    def _sq_sum(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        s = self.settings
        if self.norm:
            return norm_sq_sum(self.module, a, g, self.acc.dtype)
        if self.spec is None:
            return linear_sq_sum(a, g, s["chunk_size"], self.acc.dtype, s["pairwise_max"], s["chunk_bytes"])
        return conv_sq_sum(
            self.spec,
            a,
            g,
            s["conv_backend"],
            s["chunk_size"],
            self.acc.dtype,
            s["pairwise_max"],
            s["chunk_bytes"],
        )

    def _persample(self, a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.norm:
            return norm_persample(self.module, a, g, self.acc.dtype)
        if self.spec is None:
            return linear_persample(a.to(self.acc.dtype), g.to(self.acc.dtype))
        return conv_persample(self.spec, a, g, self.acc.dtype)

    def flush(self) -> None:
        """After one backward pass: square the summed per-call gradients of a shared layer."""
        if not self.pending:
            return
        b = self.inputs[0].shape[0]
        cfg = self.settings
        step = chunk_for(self.acc.numel(), cfg["chunk_size"], self.acc.element_size(), cfg["chunk_bytes"])
        for start in range(0, b, step):
            total = None
            for i, g in self.pending.items():
                part = self._persample(self.inputs[i][start : start + step], g[start : start + step])
                total = part if total is None else total + part
            assert total is not None
            self.acc += total.square_().sum(dim=0)
        self.pending.clear()


def _check_unused(
    model: nn.Module, taps: list[_Tap], x: torch.Tensor, dtype: torch.dtype | None
) -> list[str]:
    """Names of never-called layers whose weight truly does not affect the output (Fisher 0).

    A weight used outside its module's ``forward`` (``nn.MultiheadAttention.out_proj``)
    would get no hook call yet a non-zero Fisher: that is an error, not a zero.
    """
    silent = [t for t in taps if not t.inputs]
    if not silent:
        return []
    for t in taps:
        t.active = False
    try:
        weights = [t.module.weight for t in silent]
        with requires_grad_only(model, weights), torch.enable_grad():
            with autocast_ctx(x.device, dtype):
                out = model(x)
            if out.requires_grad:
                grads = torch.autograd.grad(out.float().sum(), weights, allow_unused=True)
            else:  # none of them reaches the output
                grads = (None,) * len(weights)
    finally:
        for t in taps:
            t.active = True
            t.reset()
    used = [t.name for t, g in zip(silent, grads, strict=True) if g is not None]
    if used:
        raise FisherError(
            f"parameters {used} affect the output but their module's forward is never called "
            "(e.g. nn.MultiheadAttention uses out_proj.weight directly); leave them out of `params`."
        )
    return [t.name for t in silent]


# ----------------------------------------------------------------------------- estimator


def estimate_persample(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    method: str,
    params: list[str] | None = None,
    mc_samples: int = 1,
    generator: torch.Generator | None = None,
    chunk_size: int | None = None,
    autocast_dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> FisherResult:
    """``montecarlo`` (sampled labels) or ``empirical`` (dataset labels) per-sample Fisher."""
    check_options(options, PERSAMPLE_OPTIONS, method)
    labels = "sampled" if method == "montecarlo" else "dataset"
    draws = check_positive("mc_samples", mc_samples) if labels == "sampled" else 1
    chunk_size = check_positive("chunk_size", chunk_size, allow_none=True)
    max_samples = check_positive("max_samples", options.get("max_samples"), allow_none=True)
    pairwise_max = int(options.get("pairwise_max_positions", DEFAULT_PAIRWISE_MAX))
    likelihood = options.get("likelihood", "categorical")
    if likelihood not in LIKELIHOODS:
        raise FisherError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
    requested_backend = options.get("conv_backend", "auto")
    if requested_backend not in CONV_BACKENDS:
        raise FisherError(f"conv_backend must be one of {CONV_BACKENDS}, got {requested_backend!r}")
    dtype = parse_dtype(autocast_dtype)
    run_model, dev = resolve_device(model, device)
    measured = resolve_params(run_model, params)
    warn_if_training(model)

    chunk_bytes = default_chunk_bytes(dev)
    settings = {
        "chunk_size": chunk_size,
        "conv_backend": requested_backend,
        "pairwise_max": pairwise_max,
        "chunk_bytes": chunk_bytes,
    }
    taps = []
    for name, module, weight in measured:
        acc_dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        taps.append(_Tap(name, module, torch.zeros(weight.shape, dtype=acc_dtype, device=dev), settings))

    num_samples = 0
    unused: list[str] = []
    handles = []
    try:
        with requires_grad_only(run_model, []), torch.enable_grad():
            handles = [t.module.register_forward_hook(t.forward_hook) for t in taps]
            for batch_index, (x, y) in enumerate(iter_batches(loader, dev, max_samples)):
                if not x.dtype.is_floating_point:
                    raise FisherError(f"inputs must be floating point images, got {x.dtype}")
                x_in = x.detach().requires_grad_(True)  # a new tensor: the caller's batch is untouched
                with autocast_ctx(dev, dtype):
                    logits = run_model(x_in)
                if batch_index == 0:
                    unused = _check_unused(run_model, taps, x, dtype)
                    if unused:  # the check consumed the hooks' captures: redo the forward
                        with autocast_ctx(dev, dtype):
                            logits = run_model(x_in)
                _check_captures(taps, x.shape[0])
                targets = draw_targets(logits, y, labels, draws, generator, likelihood)
                if taps:
                    for s in range(draws):
                        loss = loss_sum(logits, targets[s], likelihood)
                        torch.autograd.grad(loss, [x_in], retain_graph=s < draws - 1, allow_unused=True)
                        for t in taps:
                            t.flush()
                for t in taps:
                    t.reset()
                num_samples += x.shape[0]
    finally:
        for h in handles:
            h.remove()
        for t in taps:
            t.reset()
    if num_samples == 0:
        raise FisherError("no samples: the loader yielded no batches")

    sums = {t.name: (t.acc / draws).to("cpu", torch.float32) for t in taps}
    config = {
        "method": method,
        "labels": labels,
        "mc_samples": draws,
        "likelihood": likelihood,
        "chunk_size": chunk_size,
        "chunk_bytes": chunk_bytes if chunk_size is None else None,
        "conv_backend": requested_backend,  # "auto" is resolved per layer (conv.pick_backend)
        "pairwise_max_positions": pairwise_max,
        "autocast_dtype": str(dtype).replace("torch.", "") if dtype is not None else None,
        "device": str(dev),
        "max_samples": max_samples,
        "generator_seed": generator.initial_seed() if generator is not None else None,
        "num_params": len(taps),
        "unused_params": unused,
    }
    return FisherResult.from_sums(sums, num_samples, method, config)


def _check_captures(taps: list[_Tap], batch: int) -> None:
    for t in taps:
        if t.constant_output:
            raise FisherError(
                f"the output of {t.name!r} does not depend on the input batch (or runs under no_grad); "
                "its per-sample Fisher is undefined here. Leave it out of `params`."
            )
        for a in t.inputs:
            if a.shape[0] != batch:
                raise FisherError(
                    f"{t.name!r} received an input with leading dim {a.shape[0]} for a batch of {batch}; "
                    "per-sample Fisher needs batch-first layers."
                )
