"""Norm-layer scales (``include_norm`` layouts) against a naive per-sample autograd loop."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from t2v_hub.fisher import estimate
from t2v_hub.probes.layout import build_layout


def naive(model, x, y, names):
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in names}
    for p in model.parameters():
        p.requires_grad_(True)
    for i in range(x.shape[0]):
        loss = F.cross_entropy(model(x[i : i + 1]), y[i : i + 1], reduction="sum")
        grads = torch.autograd.grad(loss, [params[n] for n in names])
        for n, g in zip(names, grads, strict=True):
            acc[n] += g.double() ** 2
    for p in model.parameters():
        p.requires_grad_(False)
    return {n: (v / x.shape[0]).float() for n, v in acc.items()}


@pytest.mark.parametrize("name", ["test_resnet", "test_efficientnet", "test_vit"])
def test_norm_scales_match_naive_loop(name: str) -> None:
    kwargs = {"img_size": 32} if name == "test_vit" else {}
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4, **kwargs).eval()
    with torch.no_grad():  # non-trivial running statistics and scales
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    for p in model.parameters():
        p.requires_grad_(False)
    layout = build_layout(model, include_norm=True)
    names = [e.name for e in layout.entries if e.kind == "norm"]
    assert names
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 3, 32, 32, generator=g)
    y = torch.randint(0, 4, (6,), generator=g)
    got = estimate(model, [(x, y)], "empirical", params=layout.param_names).per_param
    ref = naive(model, x, y, names)
    for n in names:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-10 + 1e-5 * float(ref[n].abs().max()))
    assert layout.reduce(got).shape == (layout.dim,)
