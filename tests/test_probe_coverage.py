"""The fast subset of ``benchmarks/probe_coverage.py``: one tiny model per layer kind, embedded end to end.

Each kind is a class of timm architecture the exact per-sample estimator had to learn
(see BENCHMARKS.md "Probe coverage"); exactness against naive loops is in test_fisher.py,
this checks that the whole pipeline (probe, head, layout, Fisher, embedding) runs on them.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from torch import nn

from t2v_hub.task2vec import TensorTask, embed


def _crossvit() -> nn.Module:
    from timm.models.crossvit import CrossVit

    return CrossVit(img_size=[32, 32], patch_size=[8, 16], embed_dim=[16, 32], depth=[[1, 1, 0]], num_heads=[2, 2],
                    mlp_ratio=[2, 2, 1], num_classes=5)


def _metaformer() -> nn.Module:
    from timm.models.metaformer import MetaFormer

    return MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), use_mlp_head=True, num_classes=5)


def _mvit() -> nn.Module:
    from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg

    return MultiScaleVit(MultiScaleVitCfg(depths=(1, 1), embed_dim=(8, 16), num_heads=(2, 2)), img_size=(32, 32),
                         num_classes=5)


KINDS: dict[str, Callable[[], nn.Module]] = {
    "conv+BN (resnet)": lambda: timm.create_model("test_resnet"),
    "depthwise + same padding (efficientnet)": lambda: timm.create_model("test_efficientnet"),
    "ViT tokens (B, N, C)": lambda: timm.create_model("test_vit", img_size=32, patch_size=8),
    "windowed attention (swin)": lambda: timm.create_model(
        "swin_tiny_patch4_window7_224", img_size=32, patch_size=4, window_size=4, embed_dim=8, depths=(1, 1),
        num_heads=(1, 1)),
    "two-head classifier (levit)": lambda: timm.create_model(
        "levit_128s", img_size=32, embed_dim=(16, 24, 32), key_dim=8, num_heads=(1, 1, 1), depth=(1, 1, 1)),
    "weight-standardised conv (nfnet)": lambda: timm.create_model("test_nfnet"),
    "conv over a folded batch (tnt)": lambda: timm.create_model(
        "tnt_s_patch16_224", img_size=32, patch_size=16, embed_dim=16, inner_dim=8, depth=1, num_heads_inner=1,
        num_heads_outer=2),
    "pooling attention (mvitv2)": _mvit,
    "branch heads (crossvit)": _crossvit,
    "MLP head (metaformer)": _metaformer,
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_layer_kind_embeds_with_montecarlo(kind: str) -> None:
    torch.manual_seed(0)
    model = KINDS[kind]().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 3, 32, 32, generator=g), torch.arange(6) % 2
    e = embed(TensorTask(x, y), model, "montecarlo", input_size=32, batch_size=3)
    assert e.dim > 0 and bool(torch.isfinite(e.vector).all()) and e.norm > 0
