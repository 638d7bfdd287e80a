"""Probes: a timm backbone with a task head, whose Fisher is the task embedding.

``create_probe`` accepts any timm model name (with or without a pretrained tag),
``hf-hub:org/name`` and ``local-dir:/path`` names, a local checkpoint via
``checkpoint_path``, or an ``nn.Module`` (deep-copied: the caller's model is never
touched). The probe's backbone is always in eval mode: BatchNorm statistics,
dropout and drop-path stay frozen, so features do not depend on batch make-up.

Floor 1: imports ``errors``, ``constants`` and ``registry`` only; never the pipeline,
``selection`` or ``cli``.
"""

from __future__ import annotations

# timm is imported where a model is built, not here: importing it costs seconds (it pulls in
# torchvision and torch._dynamo), and commands that only read embeddings import this package
# through the Fisher and layout modules.
import copy
import numbers
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import constants as C
from ..config import check_flag, check_path
from ..devices import pick_device
from ..errors import ProbeError, WeightsError
from .adapters import (
    GenericAdapter,
    get_probe_adapter,
    list_probe_adapters,
    model_family,
    register_probe_adapter,
)
from .constant import input_independent
from .layout import EmbeddingLayout, build_layout, filter_parameter_names
from .names import check_known, fail_fast_if_unreachable
from .weights import OFFLINE_WEIGHTS, load_offline_weights, offline_weights_path, state_dict_sha256

__all__ = [
    "EmbeddingLayout",
    "GenericAdapter",
    "Probe",
    "ProbeConfig",
    "build_layout",
    "create_probe",
    "filter_parameter_names",
    "get_probe_adapter",
    "list_probe_adapters",
    "register_probe_adapter",
    "resolve_weights",
]

_RANDOM_INIT_SEED = 0


@dataclass(frozen=True)
class ProbeConfig:
    """Everything that defines a probe; recorded into every embedding."""

    name: str
    pretrained: str  # "offline-package", "timm", "checkpoint", "random(seed=0)" or "module"
    weights_sha256: str
    include_norm: bool = False
    input_size: tuple[int, int, int] | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


class Probe(nn.Module):
    """A timm model with a task head; ``forward`` returns logits."""

    def __init__(self, model: nn.Module, config: ProbeConfig, num_classes: int, data_config: dict[str, Any],
                 layout: tuple[EmbeddingLayout, list[str]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.num_classes = num_classes
        self.data_config = data_config
        self.adapter = get_probe_adapter(model)
        self.eval()
        if layout is None:  # copies pass theirs: the detection forward runs once per probe
            layout = _measured_layout(model, config.include_norm, tuple(data_config["input_size"]))
        self.layout: EmbeddingLayout = layout[0]
        self.constant_layers: list[str] = list(layout[1])

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def family(self) -> str:
        return model_family(self.model)

    def train(self, mode: bool = True) -> Probe:
        # The backbone never leaves eval mode: BN running stats and dropout stay frozen.
        return super().train(False)

    def head(self) -> nn.Module:
        return self.adapter.head(self.model)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter.features(self.model, x)

    def logits_from_features(self, feats: torch.Tensor) -> torch.Tensor:
        return self.adapter.logits_from_features(self.model, feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def measured_params(self) -> list[str]:
        return self.layout.param_names

    def with_outputs(self, outputs: int) -> Probe:
        """A copy of this probe whose head has ``outputs`` outputs, zero-initialised and frozen.

        What ``create_probe`` does to a fresh head, for heads ``create_probe`` cannot make
        (a regression head with one output). The backbone's weights are copied, not shared:
        estimators must never mutate the model they measure, and neither may this.
        """
        model = copy.deepcopy(self.model)
        self.adapter.reset_head(model, outputs)
        _init_head(self.adapter, model)
        return Probe(model, self.config, outputs, dict(self.data_config), (self.layout, self.constant_layers))

    def copy(self) -> Probe:
        """An independent copy (weights included), so a pipeline can move or fit it freely."""
        return Probe(copy.deepcopy(self.model), self.config, self.num_classes, dict(self.data_config),
                     (self.layout, self.constant_layers))


def _measured_layout(model: nn.Module, include_norm: bool,
                     input_size: tuple[int, ...]) -> tuple[EmbeddingLayout, list[str]]:
    """The layout, less the layers whose output is the same for every image (probes/constant.py)."""
    layout = build_layout(model, include_norm=include_norm)
    constant = input_independent(model, layout.param_names, input_size)
    if constant:
        layout = EmbeddingLayout(tuple(e for e in layout.entries if e.name not in constant))
    return layout, constant


def _init_head(adapter: Any, model: nn.Module) -> None:
    """Zero classifier, frozen model: the head is fit from zero on every task, whatever the RNG state.

    Only the layers that output the classes are zeroed. An MLP head's hidden layers
    (MetaFormer's ``MlpHead``) keep their weights: zeroed too, no gradient could reach them
    or the backbone, and the head would fit nothing (an all-zero Fisher).
    """
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RANDOM_INIT_SEED)
        linears = [m for m in adapter.head(model).modules() if isinstance(m, nn.Linear)]
        outputs = [m for m in linears if m.out_features == num_classes] or linears[-1:]
        for m in outputs:
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)


def _input_size(input_size: int | tuple[int, ...] | None) -> tuple[int, int, int] | None:
    """``input_size`` as (C, H, W), or an error naming it when it is not a usable image size."""
    if input_size is None:
        return None
    whole = lambda s: isinstance(s, numbers.Integral) and not isinstance(s, bool)  # noqa: E731 (numpy ints too)
    try:
        size = (3, input_size, input_size) if whole(input_size) else tuple(input_size)
    except TypeError:
        size = ()
    if len(size) != 3 or not all(whole(s) for s in size):
        raise ProbeError(f"input_size={input_size!r} is not a side in pixels or a (channels, height, width) "
                         "tuple of ints; pass e.g. input_size=224")
    size = tuple(int(s) for s in size)
    if size[0] < 1 or min(size[1:]) < 1 or max(size[1:]) > C.MAX_INPUT_SIZE:
        raise ProbeError(f"input_size={input_size!r} is outside 1..{C.MAX_INPUT_SIZE} px; probes run near their "
                         "pretraining size (timm's data config: 224 for most), pass e.g. input_size=224")
    return size


def _load_checkpoint(model: nn.Module, path: str) -> str:
    from .weights import file_sha256

    if not os.path.isfile(path):
        raise WeightsError(f"checkpoint {path!r} not found; pass an existing .safetensors/.pth file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            # weights_only: a checkpoint is data, never code.
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
    except Exception as exc:
        # The reader's first line says what is wrong; torch.load's advice after it is about pickles.
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsError(f"cannot read checkpoint {path!r} ({type(exc).__name__}: {why}); pass a .safetensors "
                           "file or a .pth/.pt state dict of tensors") from exc
    # A fine-tuned checkpoint's classifier has its own number of classes: the probe refits its
    # head from zero anyway, so a head of another shape is left out instead of refused.
    head_keys = _classifier_keys(model)
    own = model.state_dict()
    dropped = {k for k, v in state.items() if k in head_keys and k in own and tuple(own[k].shape) != tuple(v.shape)}
    try:
        missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in dropped},
                                                    strict=False)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = lines[1] if len(lines) > 1 else lines[0]  # line 0 is only "Error(s) in loading ..."
        raise WeightsError(f"checkpoint {path!r} does not fit the probe architecture: {detail}") from exc
    missing = [k for k in missing if k not in dropped]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(f"checkpoint {path!r} does not fit the probe architecture: {what} "
                           f"({len(missing)} missing, {len(unexpected)} unexpected keys)")
    return file_sha256(path)


def _classifier_keys(model: nn.Module) -> set[str]:
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, nn.Module):
        return set()
    for prefix, module in model.named_modules():
        if module is head:
            return {f"{prefix}.{n}" if prefix else n for n, _ in head.named_parameters()}
    return set()


def resolve_weights(
    model_name: str, pretrained: bool | None, checkpoint_path: str | None, model_kwargs: dict[str, Any]
) -> tuple[nn.Module, str, str]:
    """Create the timm model with its weights; returns (model, weights kind, weights sha256)."""
    with torch.random.fork_rng(devices=[]):
        # Random-init probes must be the same in every process and run.
        torch.manual_seed(_RANDOM_INIT_SEED)
        use_timm_pretrained = False
        if checkpoint_path is None and pretrained is not False:
            if model_name in OFFLINE_WEIGHTS and offline_weights_path(model_name) is not None:
                use_timm_pretrained = False
            elif pretrained is True or (pretrained is None and not model_name.startswith("test_")):
                use_timm_pretrained = True
        if use_timm_pretrained:
            fail_fast_if_unreachable(model_name)
        try:
            import timm

            model = timm.create_model(model_name, pretrained=use_timm_pretrained, **model_kwargs)
        except (RuntimeError, OSError, ValueError) as exc:
            if use_timm_pretrained and model_name.startswith(("hf-hub:", "hf_hub:")):
                raise WeightsError(
                    f"cannot download {model_name!r} from the Hub ({type(exc).__name__}): check the repo id and "
                    "the network (HF_ENDPOINT, HF_HUB_OFFLINE), or save the model locally and pass local-dir:PATH"
                ) from exc
            if use_timm_pretrained:
                raise WeightsError(
                    f"cannot fetch pretrained weights for {model_name!r} ({type(exc).__name__}); "
                    "install `t2v-hub[offline-weights]` for tf_efficientnet_lite0/1/2, pass a checkpoint, "
                    "or use pretrained=False"
                ) from exc
            raise ProbeError(f"cannot create probe {model_name!r}: {exc}") from exc
    if checkpoint_path is not None:
        return model, "checkpoint", _load_checkpoint(model, checkpoint_path)
    if pretrained is not False and model_name in OFFLINE_WEIGHTS and offline_weights_path(model_name) is not None:
        digest = load_offline_weights(model, model_name)
        # These checkpoints were trained and evaluated with bilinear resizing (the
        # original EfficientNet-Lite pipeline); timm's bicubic default for its own
        # port misclassifies e.g. chelsea(). The config travels with the model.
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), "interpolation": "bilinear"}
        return model, "offline-package", digest
    if use_timm_pretrained:
        return model, "timm", state_dict_sha256(model)
    return model, f"random(seed={_RANDOM_INIT_SEED})", state_dict_sha256(model)


def create_probe(
    name: str | nn.Module,
    num_classes: int,
    *,
    pretrained: bool | None = None,
    checkpoint_path: str | None = None,
    include_norm: bool = False,
    input_size: int | tuple[int, int, int] | None = None,
    device: str | torch.device | None = None,
    **model_kwargs: Any,
) -> Probe:
    """Build a probe for a task with ``num_classes`` classes.

    ``pretrained=None`` (auto) uses packaged offline weights when installed, timm's
    pretrained weights otherwise, and a seeded random init for timm's ``test_*``
    models (which have none). ``input_size`` overrides the data config (small
    images for tests); everything else about preprocessing comes from the model's
    own timm data config.
    """
    if not isinstance(name, (str, nn.Module)):
        raise ProbeError(f"probe={name!r}: expected a timm model name (str), an nn.Module or a Probe")
    if num_classes < 2:
        raise ProbeError(f"a probe needs at least 2 classes, got {num_classes}; the task must have 2+ labels")
    size = _input_size(input_size)  # before building anything: a typo should not cost a model load
    check_flag("include_norm", include_norm, error=ProbeError)  # "no" is truthy
    check_path("checkpoint_path", checkpoint_path, expected="the path of a .safetensors/.pth file", error=ProbeError)
    dev = pick_device(device) if device is not None else None  # None: stay where timm built it
    if isinstance(name, nn.Module):
        model = copy.deepcopy(name)  # never mutate the caller's model
        probe_name = getattr(getattr(model, "pretrained_cfg", {}), "get", lambda *_: None)("architecture") or type(
            model
        ).__name__
        kind, sha = "module", state_dict_sha256(model)
    else:
        check_known(name)
        probe_name = name
        model, kind, sha = resolve_weights(name, pretrained, checkpoint_path, model_kwargs)
    adapter = get_probe_adapter(model)
    import timm.data

    data_config = dict(timm.data.resolve_model_data_config(model))
    if size is not None:
        data_config["input_size"] = size
        data_config["crop_pct"] = 1.0
    try:
        adapter.reset_head(model, num_classes)
    except TypeError as exc:
        raise ProbeError(f"{probe_name!r} cannot be used as a probe: {exc}") from exc
    _init_head(adapter, model)
    config = ProbeConfig(
        name=probe_name,
        pretrained=kind,
        weights_sha256=sha,
        include_norm=include_norm,
        input_size=tuple(data_config["input_size"]),
        model_kwargs=dict(model_kwargs),
    )
    probe = Probe(model, config, num_classes, data_config)
    if dev is not None:
        probe.to(dev)
    return probe
