"""The decoder head of supplement 1.1 for pixel-wise tasks, and the model whose Fisher is measured.

"conv3x3 256 -> conv3x3 256 -> conv3x3 128 -> conv3x3 32 -> conv1x1 out_channels,
where upsample denotes nearest neighbor upsampling of the filter responses to the
specified resolution": each conv3x3 is followed by BatchNorm and ReLU, the 1x1 conv
by nothing (its output is the per-pixel logits, or the regression output). The
three nearest upsamplings grow the backbone's feature map to the target by the same
factor each. The backbone stays frozen: the decoder is trained on its cached
feature maps, then the Fisher is taken of the backbone's weights through
backbone + decoder (:class:`DenseModel`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ProbeError

DECODER_SPEC = "supplement-1.1: conv3x3 256, up, conv3x3 256, up, conv3x3 128, up, conv3x3 32, conv1x1 (BN+ReLU)"


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def upsample_sizes(feat: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """Three nearest-upsampling steps from the feature map to the target, a constant factor each."""
    out = []
    for step in (1, 2):
        out.append(tuple(max(f, round(f * (t / f) ** (step / 3))) for f, t in zip(feat, target, strict=True)))
    out.append(tuple(target))
    return out  # type: ignore[return-value]


class PixelDecoder(nn.Module):
    """conv3x3 256 -> up -> conv3x3 256 -> up -> conv3x3 128 -> up -> conv3x3 32 -> conv1x1 ``out``."""

    def __init__(self, cin: int, out: int, sizes: list[tuple[int, int]]) -> None:
        super().__init__()
        self.sizes = [tuple(s) for s in sizes]
        self.c1, self.c2 = conv_bn_relu(cin, 256), conv_bn_relu(256, 256)
        self.c3, self.c4 = conv_bn_relu(256, 128), conv_bn_relu(128, 32)
        self.out = nn.Conv2d(32, out, 1)  # no nonlinearity: the softmax / Gaussian comes after

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        h = self.c1(f)
        h = self.c2(F.interpolate(h, size=self.sizes[0], mode="nearest"))
        h = self.c3(F.interpolate(h, size=self.sizes[1], mode="nearest"))
        h = self.c4(F.interpolate(h, size=self.sizes[2], mode="nearest"))
        return self.out(h)


def feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model.forward_features(x)`` as a ``(B, C, h, w)`` map.

    CNNs return it as is; NHWC models (Swin, some MLP-mixers) are permuted; ViT-style
    ``(B, N, C)`` tokens drop their prefix tokens and fold onto the patch grid.
    """
    f = model.forward_features(x)
    c = getattr(model, "num_features", None)
    if f.dim() == 4 and f.shape[1] == c:
        return f
    if f.dim() == 4 and f.shape[-1] == c:
        return f.permute(0, 3, 1, 2)
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if f.dim() == 3 and grid is not None:
        tokens = f[:, getattr(model, "num_prefix_tokens", 0):]
        gh, gw = (int(g) for g in grid)
        if tokens.shape[1] == gh * gw:
            return tokens.transpose(1, 2).reshape(f.shape[0], f.shape[2], gh, gw)
    raise ProbeError(
        f"{type(model).__name__}.forward_features returns {tuple(f.shape)}, not a spatial feature map:"
        " dense tasks need a convolutional, Swin-style or ViT probe (e.g. resnet18)"
    )


class DenseModel(nn.Module):
    """Backbone features -> decoder: the pixel-wise model whose backbone Fisher is the embedding."""

    def __init__(self, backbone: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.backbone, self.decoder = backbone, decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(feature_map(self.backbone, x))


def make_decoder(cin: int, out: int, feat: tuple[int, int], target: tuple[int, int], seed: int) -> PixelDecoder:
    """A freshly initialised decoder (seeded, so the same task gives the same embedding)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PixelDecoder(cin, out, upsample_sizes(feat, target))
