"""The probe's CPU layout (probes/memory_format.py): channels-last where the model computes the same
logits in it, NCHW otherwise; the embedding is the same either way (up to float rounding)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import t2v_hub.task2vec as T
from t2v_hub.probes.memory_format import prefer_channels_last
from t2v_hub.task2vec import TensorTask

X = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1, 2] * 4)


class Viewing(nn.Module):
    """Model code that assumes NCHW strides: .view() of a conv output fails on an NHWC tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y.view(y.shape[0], -1)[:, :5]


def test_a_model_that_runs_channels_last_is_switched_and_one_that_cannot_is_left() -> None:
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten())
    assert prefer_channels_last(conv, X[:1]) == "channels_last"
    assert conv[0].weight.is_contiguous(memory_format=torch.channels_last)
    viewing = Viewing().train()
    before = viewing.bn.running_mean.clone()
    assert prefer_channels_last(viewing, X[:1]) == "contiguous"
    assert viewing.training and torch.equal(viewing.bn.running_mean, before)  # the trial ran in eval mode
    assert viewing.conv.weight.is_contiguous() and viewing(X).shape == (12, 5)
    assert prefer_channels_last(nn.Linear(3, 2), torch.rand(1, 3)) == "contiguous"  # nothing to convert


@pytest.mark.parametrize(("probe", "method"), [
    ("test_efficientnet", "montecarlo"), ("test_efficientnet", "batch"), ("test_convnext", "montecarlo"),
    ("test_byobnet", "montecarlo"), ("test_nfnet", "montecarlo"), ("test_vit", "montecarlo"), ("test_resnet", "montecarlo"),
    ("test_efficientnet_gn", "empirical"),
])
def test_the_embedding_is_the_same_in_either_layout(monkeypatch, probe, method) -> None:
    """Families whose forward mixes convolutions with permutes (ConvNeXt), weight standardisation
    (NFNet), a patch embedding before attention (ViT) and group norm, through the per-sample taps."""
    kw = {"input_size": 32, "cache": False, "quiet": True, "pretrained": False}
    fast = T.embed(TensorTask(X, Y), probe, method, **kw)
    assert fast.metadata["memory_format"] in ("channels_last", "contiguous")
    import t2v_hub.run as R

    monkeypatch.setattr(R, "prefer_channels_last", lambda model, sample: "contiguous")
    plain = T.embed(TensorTask(X, Y), probe, method, **kw)
    assert plain.metadata["memory_format"] == "contiguous"
    torch.testing.assert_close(fast.vector, plain.vector, rtol=1e-4, atol=1e-7)
