"""The memory layout a probe runs in: channels-last (NHWC) on the CPU, where the model allows it.

oneDNN's CPU convolutions are much faster on NHWC tensors than on NCHW for depthwise layers:
with ``tf_efficientnet_lite0`` at 32 px (the demo probe) the features pass runs 3.6x faster and
the Fisher pass 1.4x; at 64 px 1.17x / 1.06x; resnet18 at 64 px gains nothing (0.99x end to end;
``python -m benchmarks.memory_format``). The layout changes no value beyond float rounding (the same
sums in another order), and the per-sample Fisher taps read any layout. Converting the 4-D
weights is enough: a convolution with a channels-last weight returns a channels-last output,
so the whole forward follows without touching the input batches.

Some model code assumes NCHW strides (a ``.view`` of a convolution's output fails on an NHWC
tensor), so the layout is only kept after one image runs through both layouts with the same
logits; otherwise the probe stays NCHW. On CUDA nothing changes (cuDNN's choice, unmeasured).
"""

from __future__ import annotations

import torch
from torch import nn

# Logits of one image in the two layouts may differ by float rounding only.
_RTOL, _ATOL = 1e-3, 1e-4


def _has_4d_weights(model: nn.Module) -> bool:
    return any(p.dim() == 4 for p in model.parameters())


def prefer_channels_last(model: nn.Module, sample: torch.Tensor) -> str:
    """Switch a CPU ``model`` to channels-last if it computes ``sample`` the same way; the layout used.

    ``sample``: one or a few preprocessed input images (N, C, H, W) on the model's device.
    Returns ``"channels_last"`` or ``"contiguous"`` (the model is left in that layout).
    """
    if sample.device.type != "cpu" or sample.dim() != 4 or not _has_4d_weights(model):
        return "contiguous"
    was_training = model.training
    model.eval()  # one image through BatchNorm in training mode would change its running stats
    try:
        with torch.no_grad():
            ref = model(sample)
            model.to(memory_format=torch.channels_last)
            try:
                out = model(sample)
            except RuntimeError:  # e.g. a .view() of an NHWC tensor
                out = None
        if not (isinstance(ref, torch.Tensor) and isinstance(out, torch.Tensor) and out.shape == ref.shape
                and torch.allclose(out.float(), ref.float(), rtol=_RTOL, atol=_ATOL)):
            model.to(memory_format=torch.contiguous_format)
            return "contiguous"
        return "channels_last"
    finally:
        model.train(was_training)


__all__ = ["prefer_channels_last"]
