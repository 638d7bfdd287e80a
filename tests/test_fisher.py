"""Fisher estimators against a naive per-sample loop, a closed form and their contracts.

Every estimate is compared with an independent reference: a Python loop over samples
that asks autograd for the gradient of one sample's loss w.r.t. each measured weight
(in float64), squares it and averages. Label draws are reproduced with the public
``sample_labels`` and a generator seeded like the estimator's.
"""

from __future__ import annotations

import copy
import functools
import io
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from t2v_hub.errors import FisherError
from t2v_hub.fisher import FISHER_METHODS, estimate, sample_labels
from t2v_hub.probes.layout import build_layout, filter_parameter_names


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # tiny ops: intra-op threads only add overhead (and contention on shared CPUs)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


SEED = 1234


def gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- models and data


class HandNet(nn.Module):
    """Depthwise, grouped and strided TF-'same' convs, an in-place ReLU right after a conv
    (the output-gradient capture must see the pre-ReLU gradient) and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=4, bias=False)
        self.same = Conv2dSame(12, 10, 3, stride=2)  # 10x10 input -> asymmetric (0, 1) padding
        self.fc = nn.Linear(10, 6)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.stem(x))
        x = torch.tanh(self.dw(x))
        x = F.gelu(self.grouped(x))
        x = torch.sigmoid(self.same(x)).mean(dim=(2, 3))
        return self.head(torch.tanh(self.fc(x)))


class ExoticNet(nn.Module):
    """Conv1d with string 'same' padding, reflect padding, a conv shared by two calls
    and a Linear on a 4-D (B, H, W, C) input."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(3, 4, 3, padding="same", dilation=2)
        self.refl = nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect")
        self.shared = nn.Conv2d(6, 6, 3, padding=1)
        self.mix = nn.Linear(6, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = torch.tanh(self.c1(x.reshape(b, c, h * w))).reshape(b, 4, h, w)
        x = torch.tanh(self.refl(x))
        x = torch.tanh(self.shared(torch.tanh(self.shared(x))))  # weight shared across calls
        x = torch.tanh(self.mix(x.permute(0, 2, 3, 1)))  # Linear on (B, H, W, C)
        return self.head(x.mean(dim=(1, 2)))


class StdNet(nn.Module):
    """Weight-standardised convolutions (BiT, NFNets, hybrid ViTs), static and dynamic 'same' padding."""

    def __init__(self) -> None:
        super().__init__()
        from timm.layers import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame

        self.std = StdConv2d(3, 6, 3, padding=1)
        self.std_same = StdConv2dSame(6, 8, 3, stride=2, padding="same")  # dynamic: odd input, stride 2
        self.scaled = ScaledStdConv2d(8, 8, 3, padding=1, groups=2)
        self.scaled_same = ScaledStdConv2dSame(8, 10, 3, stride=2, padding="same")
        self.head = nn.Linear(10, 5)
        with torch.no_grad():
            self.scaled.gain.uniform_(0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.std(x))
        x = torch.tanh(self.std_same(x))
        x = torch.tanh(self.scaled(x))
        return self.head(torch.tanh(self.scaled_same(x)).mean(dim=(2, 3)))


def make_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    if name == "hand":
        model: nn.Module = HandNet()
    elif name == "exotic":
        model = ExoticNet()
    elif name == "std":
        model = StdNet()
    elif name == "tiny_tnt":
        # Inner transformer: pixel_embed's conv sees (B * patches, C, p, p), batch outermost.
        model = timm.create_model("tnt_s_patch16_224", img_size=32, patch_size=16, embed_dim=16, inner_dim=8,
                                  depth=1, num_heads_inner=1, num_heads_outer=2, num_classes=5)
    elif name == "tiny_mvit":
        # Pooling attention: pool_q/k/v convs see (B * heads, C, H, W).
        from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg

        model = MultiScaleVit(MultiScaleVitCfg(depths=(1, 1), embed_dim=(8, 16), num_heads=(2, 2)), img_size=(32, 32),
                              num_classes=5)
    elif name == "tiny_swin":
        # Windowed attention: qkv sees (B * windows, tokens, C); the second block is shifted.
        model = timm.create_model("swin_tiny_patch4_window7_224", num_classes=5, img_size=16, patch_size=2,
                                  window_size=4, embed_dim=8, depths=(2, 1), num_heads=(1, 1))
    elif name == "tiny_levit":
        # Tuple-returning classifier (head, head_dist), BN-folded linear layers on (B, N, C) tokens.
        # Tested by test_levit_matches_a_per_sample_loop_over_a_batched_forward.
        model = timm.create_model("levit_128s", num_classes=5, img_size=32, embed_dim=(16, 24, 32), key_dim=8,
                                  num_heads=(1, 1, 1), depth=(1, 1, 1))
    else:
        # test_vit: 16 px with 4 px patches -> 17 tokens, more than the pairwise threshold.
        kwargs = {"img_size": 16, "patch_size": 4} if name == "test_vit" else {}
        model = timm.create_model(name, num_classes=5, **kwargs)
        # Randomise BN statistics/affines so that eval-mode BN is not the identity.
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                (
                    m.running_mean.uniform_(-0.2, 0.2),
                    m.running_var.uniform_(0.5, 1.5),
                    m.weight.data.uniform_(0.5, 1.5),
                )
    return model.eval()


IMG = {"hand": 10, "exotic": 6, "std": 9, "test_nfnet": 16, "tiny_tnt": 32, "tiny_mvit": 32, "test_resnet": 16, "test_efficientnet": 16, "test_vit": 16, "tiny_swin": 16,
       "tiny_levit": 32}
CLASSES = {"exotic": 3}


def make_data(name: str, batches: int = 2, bs: int = 3) -> list:
    g, n, c = gen(7), IMG[name], CLASSES.get(name, 5)
    return [
        (torch.randn(bs, 3, n, n, generator=g), torch.randint(c, (bs,), generator=g)) for _ in range(batches)
    ]


def drawn_labels(model: nn.Module, data: list, mc: int, seed: int = SEED) -> list[torch.Tensor]:
    """The labels ``montecarlo`` draws: same generator, same order, same logits."""
    g = gen(seed)
    with torch.no_grad():
        return [sample_labels(model(x), mc, g) for x, _ in data]


def naive_fisher(model: nn.Module, data: list, targets: dict, names: list[str], bce: bool = False) -> dict:
    """Loop over samples and draws in float64: autograd of each sample's own loss, squared, averaged.

    ``targets[key][batch]`` is ``(draws, B)`` (``(draws, B, C)`` for BCE), or a pair (targets,
    weights ``(draws, B)``) to weight the draws (default 1/draws); one forward per sample serves all keys.
    """
    model = copy.deepcopy(model).double()
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    sums = {k: {n: torch.zeros_like(params[n]) for n in names} for k in targets}
    nll, dtype = (F.binary_cross_entropy_with_logits, torch.float64) if bce else (F.cross_entropy, torch.long)
    for b, (x, _) in enumerate(data):
        for i in range(x.shape[0]):
            logits = model(x[i : i + 1].double())
            for key, tgt in targets.items():
                t, w = (
                    tgt[b]
                    if isinstance(tgt[b], tuple)
                    else (tgt[b], torch.ones(tgt[b].shape[:2]) / len(tgt[b]))
                )
                for s in range(t.shape[0]):
                    loss = nll(logits, t[s, i : i + 1].to(dtype), reduction="sum")
                    grads = torch.autograd.grad(loss, weights, retain_graph=True)
                    for n, g in zip(names, grads, strict=True):
                        sums[key][n] += g.square() * float(w[s, i])
    count = sum(x.shape[0] for x, _ in data)
    return {k: {n: v / count for n, v in d.items()} for k, d in sums.items()}


@functools.cache
def reference(name: str) -> tuple[nn.Module, list, dict[str, dict[str, torch.Tensor]]]:
    """Naive references for montecarlo with 1 and 3 draws and for empirical."""
    model, data = make_model(name), make_data(name)
    targets = {"mc1": drawn_labels(model, data, 1), "mc3": drawn_labels(model, data, 3)}
    targets["empirical"] = [y.unsqueeze(0) for _, y in data]
    return model, data, naive_fisher(model, data, targets, filter_parameter_names(model))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30))


def assert_matches(result, ref: dict, norm_tol: float, elem_rtol: float) -> None:
    assert set(result.per_param) == set(ref)
    for name, r in ref.items():
        got = result.per_param[name]
        assert got.dtype == torch.float32 and got.device.type == "cpu" and got.shape == r.shape
        assert rel_err(got, r) < norm_tol, (name, rel_err(got, r))
        torch.testing.assert_close(
            got.double(), r, rtol=elem_rtol, atol=elem_rtol * float(r.abs().max()) + 1e-30
        )


# ----------------------------------------------------------------------------- exactness

# (method, conv_backend, pairwise_max_positions, mc_samples): pairwise 0 = per-sample gradients everywhere.
SETTINGS = {
    "grouped-mc1": ("montecarlo", "grouped", 0, 1),
    "unfold-mc3": ("montecarlo", "unfold", 0, 3),
    "auto-mc3": ("montecarlo", "auto", 8, 3),
    "empirical": ("empirical", "auto", 8, 1),
}


@pytest.mark.parametrize("setting", list(SETTINGS))
# tiny_levit has its own test below: a batch-of-1 forward of LeViT gives wrong stem gradients
# (finite differences agree with the batched ones), so its reference loops over a batched forward.
@pytest.mark.parametrize("name", ["hand", "exotic", "std", "test_nfnet", "test_resnet", "test_efficientnet", "test_vit",
                                  "tiny_swin", "tiny_tnt", "tiny_mvit"])
def test_equals_naive_loop(name: str, setting: str) -> None:
    """fp32 vectorised estimator vs the fp64 per-sample loop with the same labels: 1e-5."""
    method, backend, pairwise, mc = SETTINGS[setting]
    model, data, ref = reference(name)
    opts = {"conv_backend": backend, "pairwise_max_positions": pairwise}
    res = estimate(model, data, method, mc_samples=mc, generator=gen(), **opts)
    assert res.num_samples == 6 and res.config["mc_samples"] == mc and res.method == method
    assert_matches(res, ref["empirical" if method == "empirical" else f"mc{mc}"], 1e-5, 1e-3)


@pytest.mark.parametrize(("backend", "pairwise"), [("grouped", 0), ("unfold", 0), ("grouped", 100)])
def test_fp64_model_is_exact(backend: str, pairwise: int) -> None:
    """In fp64 the estimator is the definition up to the fp32 rounding of the returned result
    (chunks of 2 samples do not divide the batch of 3)."""
    model, data, ref = reference("hand")
    model64, data64 = copy.deepcopy(model).double(), [(x.double(), y) for x, y in data]
    opts = {"chunk_size": 2, "conv_backend": backend, "pairwise_max_positions": pairwise}
    res = estimate(model64, data64, "montecarlo", mc_samples=3, generator=gen(), **opts)
    assert_matches(res, ref["mc3"], 2e-7, 1e-6)


def test_bernoulli_multilabel_matches_naive() -> None:
    model = make_model("hand")
    g = gen(3)
    data = [
        (torch.randn(3, 3, 10, 10, generator=g), (torch.rand(3, 5, generator=g) > 0.5).float())
        for _ in range(2)
    ]
    g = gen()
    with torch.no_grad():
        drawn = [sample_labels(model(x), 2, g, "bernoulli") for x, _ in data]
    targets = {"emp": [y.unsqueeze(0) for _, y in data], "mc": drawn}
    refs = naive_fisher(model, data, targets, filter_parameter_names(model), bce=True)
    assert_matches(estimate(model, data, "empirical", likelihood="bernoulli"), refs["emp"], 1e-5, 1e-3)
    res = estimate(model, data, mc_samples=2, generator=gen(), likelihood="bernoulli")
    assert_matches(res, refs["mc"], 1e-5, 1e-3)


# ----------------------------------------------------------------------------- closed form (supplement 5)


class TwoLayer(nn.Module):
    """p = sigmoid(w^T z), z = sigmoid(U x); logits [0, w^T z] make 2-class CE the sigmoid BCE."""

    def __init__(self, d: int = 3, k: int = 4) -> None:
        super().__init__()
        self.U = nn.Linear(d, k, bias=False)
        self.w = nn.Linear(k, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.w(torch.sigmoid(self.U(x)))
        return torch.cat([torch.zeros_like(s), s], dim=1)


def closed_form(model: TwoLayer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """diag F(U_kj) = 1/N sum_i p(1-p) c_ikj, c_ikj = w_k^2 z_k^2 (1-z_k)^2 x_j^2; returns F, c, p."""
    with torch.no_grad():
        z = torch.sigmoid(x @ model.U.weight.t())
        p = torch.sigmoid(z @ model.w.weight.t()).squeeze(1)
        c = (model.w.weight[0] ** 2 * z**2 * (1 - z) ** 2)[:, :, None] * (x**2)[:, None, :]  # (N, k, d)
    return (p * (1 - p))[:, None, None].mul(c).mean(0), c, p


def test_closed_form_exact_expectation() -> None:
    """Empirical Fisher with y=1 and y=0, weighted by p and 1-p per sample, is the closed form."""
    torch.manual_seed(0)
    model = TwoLayer().double()
    x = torch.randn(16, 3, dtype=torch.float64) * 2
    expected, _, p = closed_form(model, x)

    def emp(i: int, label: int) -> torch.Tensor:  # sample i's squared score with that label
        res = estimate(model, [(x[i : i + 1], torch.tensor([label]))], "empirical", params=["U.weight"])
        return res.per_param["U.weight"].double()

    total = sum(p[i] * emp(i, 1) + (1 - p[i]) * emp(i, 0) for i in range(len(x))) / len(x)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=0)


def test_closed_form_montecarlo_converges() -> None:
    """Many draws approach the analytic Fisher within 5 sigma: (y-p)^2, y ~ Bernoulli(p), has mean
    p(1-p) and variance p(1-p)(1-2p)^2, and the estimate is 1/N sum_i c_i mean_S(y-p)^2, so each
    entry's sd is exact. S = 2000 draws per input: 100 copies in the batch x 20 draws."""
    torch.manual_seed(0)
    model = TwoLayer()
    x = torch.randn(16, 3) * 2
    expected, c, p = closed_form(model, x)
    copies, mc = 100, 20
    batch = [(x.repeat(copies, 1), torch.zeros(16 * copies, dtype=torch.long))]
    res = estimate(model, batch, params=["U.weight"], mc_samples=mc, generator=gen(5))
    got = res.per_param["U.weight"].double()
    var = (c.double() ** 2 * (p * (1 - p) * (1 - 2 * p) ** 2).double()[:, None, None]).sum(0) / (copies * mc)
    var = var / x.shape[0] ** 2
    sd = var.sqrt().reshape(expected.shape)
    assert ((got - expected.double()).abs() <= 5 * sd + 1e-7).all()
    assert rel_err(got, expected) < 0.05
    few = estimate(model, [(x, batch[0][1][:16])], params=["U.weight"], generator=gen(5))
    assert rel_err(got, expected) < rel_err(few.per_param["U.weight"], expected)


# ----------------------------------------------------------------------------- reduction axes, dead filters,
# determinism, precision, edge cases (then: batch estimator, dispatch)


class DeadNet(nn.Module):
    """Conv filter 2 and Linear unit 3 are dead (ReLU input always < 0 on positive images)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 5)
        self.head = nn.Linear(5, 3)
        with torch.no_grad():  # negative weights and bias on positive inputs: always < 0
            self.conv.weight[2], self.conv.bias[2] = -self.conv.weight[2].abs(), -1.0
            self.fc.weight.abs_(), self.fc.bias.fill_(0.1)  # the other units stay alive
            self.fc.weight[3], self.fc.bias[3] = -self.fc.weight[3], -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(F.relu(self.fc(h)))


@pytest.mark.parametrize("method", ["montecarlo", "empirical", "batch"])
def test_reduction_axes_and_dead_filters(method: str) -> None:
    model = DeadNet().eval()
    x = torch.rand(6, 3, 5, 5)
    res = estimate(model, [(x, torch.randint(0, 3, (6,)))], method, generator=gen(0))
    emb = build_layout(model).reduce(res.per_param)
    assert torch.isfinite(emb).all() and all(torch.isfinite(v).all() for v in res.per_param.values())
    conv, fc = emb[:4], emb[4:9]
    # The dead filter is an *output* filter: zero at index 2 of the conv block, row 2 of the weight.
    assert conv[2] == 0 and (conv[[0, 1, 3]] > 0).all()
    assert (res.per_param["conv.weight"][2] == 0).all()
    assert fc[3] == 0 and (fc[[0, 1, 2, 4]] > 0).all()
    assert (res.per_param["fc.weight"][3] == 0).all() and (res.per_param["fc.weight"][:, 3] > 0).any()


def test_determinism_and_seed_sensitivity() -> None:
    model, data = make_model("test_efficientnet"), make_data("test_efficientnet", batches=2, bs=8)
    run = functools.partial(estimate, model, data, "montecarlo", mc_samples=2)
    a, b, c = (run(generator=gen(seed)) for seed in (1, 1, 2))
    assert all(torch.equal(a.per_param[k], b.per_param[k]) for k in a.per_param)
    ea, ec = (build_layout(model).reduce(r.per_param) for r in (a, c))
    assert not torch.equal(ea, ec)
    assert rel_err(ec, ea) < 0.5  # same task, another draw of labels: close, not equal
    assert a.config["generator_seed"] == 1


# Embedding error vs fp32 measured on this probe: bf16 ~0.10, fp16 ~0.01. bf16 backward itself is
# that coarse here: plain autograd *batch* gradients under bf16 autocast differ from fp32 by
# 17-31% per layer, so the bound only guards against gross errors (e.g. squaring in bf16).
@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 0.25), (torch.float16, 0.05)])
def test_autocast_finite_fp32_and_close(dtype: torch.dtype, tol: float) -> None:
    model, data = make_model("test_resnet"), make_data("test_resnet")
    ref = estimate(model, data, "empirical")
    res = estimate(model, data, "empirical", autocast_dtype=dtype)
    layout = build_layout(model)
    for v in res.per_param.values():
        assert v.dtype == torch.float32 and torch.isfinite(v).all()
    assert rel_err(layout.reduce(res.per_param), layout.reduce(ref.per_param)) < tol
    assert res.config["autocast_dtype"] == str(dtype).replace("torch.", "")


def test_empty_param_subset_and_max_samples_and_merge() -> None:
    model, data = make_model("hand"), make_data("hand", batches=3, bs=4)
    empty = estimate(model, data, params=[])
    assert empty.per_param == {} and empty.num_samples == 12
    capped = estimate(model, data, "empirical", max_samples=6)
    first6 = [(data[0][0], data[0][1]), (data[1][0][:2], data[1][1][:2])]
    exact = estimate(model, first6, "empirical")
    assert capped.num_samples == 6
    for k in exact.per_param:
        torch.testing.assert_close(capped.per_param[k], exact.per_param[k])
    merged = estimate(model, data[:1], "empirical").merge(estimate(model, data[1:], "empirical"))
    whole = estimate(model, data, "empirical")
    for k in whole.per_param:
        torch.testing.assert_close(merged.per_param[k], whole.per_param[k], rtol=1e-5, atol=1e-9)


def test_model_is_not_mutated() -> None:
    model = make_model("test_resnet")
    model.conv1[0].weight.requires_grad_(False)  # a mixture of frozen and trainable parameters
    flags = {n: p.requires_grad for n, p in model.named_parameters()}

    def state_bytes() -> bytes:
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        return buf.getvalue()

    before, data = state_bytes(), make_data("test_resnet")
    for method in ("montecarlo", "empirical", "batch"):
        estimate(model, data, method, mc_samples=2, generator=gen(0))
    assert state_bytes() == before
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not m.training
    for x, _ in data:
        assert not x.requires_grad


def test_errors() -> None:
    model, data = make_model("hand"), make_data("hand")
    # A transposed convolution is not a convolution of its weight over the input's patches.
    std = nn.Sequential(nn.ConvTranspose2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 12 * 12, 2)).eval()
    cases = [  # (model, loader, method, kwargs, message the FisherError must contain)
        (model, data, "fisherish", {}, "montecarlo, empirical, batch, variational"),
        (model, [], "montecarlo", {}, "no samples"),
        (model, data, "empirical", {"params": ["stem.bias"]}, "stem.bias"),
        (model, data, "montecarlo", {"params": ["nope.weight"]}, "nope.weight"),
        (model, data, "montecarlo", {"conv_bakend": "unfold"}, "conv_bakend"),
        (model, data, "montecarlo", {"mc_samples": 0}, "mc_samples"),
        (model, data, "batch", {"labels": "true"}, "labels"),
        (std, data, "montecarlo", {"params": ["0.weight"]}, "ConvTranspose2d"),
    ]
    for net, loader, method, kwargs, message in cases:
        with pytest.raises(FisherError, match=re.escape(message)):
            estimate(net, loader, method, **kwargs)


class MHANet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.unused = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(2).transpose(1, 2)  # (B, H*W, C=4)
        return self.head(self.attn(h, h, h)[0].mean(1))


def test_weight_used_outside_forward_is_an_error_unused_is_zero() -> None:
    model = MHANet().eval()
    data = [(torch.randn(4, 4, 2, 2), torch.randint(0, 2, (4,)))]
    with pytest.raises(FisherError, match="attn.out_proj.weight"):
        estimate(model, data, params=["attn.out_proj.weight"])
    res = estimate(model, data, params=["unused.weight", "head.weight"])
    assert (res.per_param["unused.weight"] == 0).all() and res.config["unused_params"] == ["unused.weight"]
    assert res.per_param["head.weight"].sum() > 0


# ----------------------------------------------------------------------------- batch estimator


def test_batch_estimator_definition_by_hand() -> None:
    """F = 1/N sum_batches (grad of batch-sum CE)^2; for logits = W x that grad is sum_i (p_i - e_y_i) x_i^T."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4, bias=False)).eval()
    data = [(torch.randn(5, 3), torch.randint(0, 4, (5,))), (torch.randn(2, 3), torch.randint(0, 4, (2,)))]
    res = estimate(model, data, "batch", labels="dataset", params=["0.weight"])
    w = model[0].weight.detach()
    expected = torch.zeros_like(w)
    for x, y in data:
        grad = (torch.softmax(x @ w.t(), 1) - F.one_hot(y, 4).float()).t() @ x
        expected += grad**2
    torch.testing.assert_close(res.per_param["0.weight"], expected / 7, rtol=1e-5, atol=1e-7)
    assert res.num_samples == 7 and res.config["unbiased"] is False


def test_batch_estimator_expectation_matches_per_sample() -> None:
    """Averaged over many label draws the batch estimator and montecarlo both reach the exact
    expected Fisher (sum over classes weighted by p); the batch estimator is the noisier one.

    Repeating the same 8 inputs R times in the loader averages R independent draws in one call.
    Measured spread of the batch total over seeds at R = 150: sd ~0.08, hence the 0.3 bound.
    """
    model = DeadNet().eval()
    g = gen(0)
    data = [(torch.rand(4, 3, 4, 4, generator=g), torch.zeros(4, dtype=torch.long)) for _ in range(2)]
    names = filter_parameter_names(model)
    classes = torch.arange(3)[:, None].expand(3, 4)
    with torch.no_grad():  # exact expectation over labels: every class as a draw, weighted by p
        every_class = [(classes, torch.softmax(model(x), 1).t()) for x, _ in data]
    exact = naive_fisher(model, data, {"exact": every_class}, names)["exact"]
    repeats = 150
    rb = estimate(model, data * repeats, "batch", generator=gen(1))
    rm = estimate(model, data * repeats, "montecarlo", generator=gen(1))
    assert rb.num_samples == rm.num_samples == 8 * repeats
    for n in names:
        err_b, err_m = rel_err(rb.per_param[n], exact[n]), rel_err(rm.per_param[n], exact[n])
        tot_b, tot_m = (float(r.per_param[n].sum() / exact[n].sum()) for r in (rb, rm))
        assert abs(tot_m - 1) < 0.1 and abs(tot_b - 1) < 0.3, (n, tot_m, tot_b)
        assert err_m < err_b, (n, err_m, err_b)


def test_variational_dispatch_passes_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import t2v_hub.fisher.variational as variational

    seen = {}

    def fake(model, loader, *, params=None, generator=None, **options):
        seen.update(params=params, generator=generator, **options)
        return "ok"

    monkeypatch.setattr(variational, "estimate_variational", fake)
    kwargs = {"params": ["weight"], "generator": torch.Generator(), "beta": 1e-3, "device": "cpu"}
    assert estimate(nn.Linear(2, 2), [], "variational", **kwargs) == "ok" and seen == kwargs
    assert set(FISHER_METHODS) == {"montecarlo", "empirical", "batch", "variational"}


def test_levit_matches_a_per_sample_loop_over_a_batched_forward() -> None:
    """LeViT: per-sample autograd through a *batched* forward, since a batch-of-1 forward gives wrong
    gradients for its stem convolutions (they disagree with finite differences; a batch of 3 agrees).
    Samples do not interact (d out_i / d x_j = 0), so the batched loop is a per-sample reference."""
    model, data = make_model("tiny_levit"), make_data("tiny_levit")
    m64 = copy.deepcopy(model).double()
    names = filter_parameter_names(model)
    params = dict(m64.named_parameters())
    weights = [params[n] for n in names]
    x0 = data[0][0].double().requires_grad_(True)
    (dx,) = torch.autograd.grad(m64(x0)[0].sum(), x0)
    assert float(dx[1:].abs().max()) == 0.0  # sample 0's output ignores the others
    w, v = params["stem.conv1.linear.weight"], torch.randn_like(params["stem.conv1.linear.weight"], generator=gen())
    (g1,) = torch.autograd.grad(m64(x0[:1].detach())[0].sum(), w)
    (g3,) = torch.autograd.grad(m64(x0.detach())[0].sum(), w)
    with torch.no_grad():
        w += 1e-6 * v
        up = float(m64(x0.detach())[0].sum())
        w -= 2e-6 * v
        down = float(m64(x0.detach())[0].sum())
        w += 1e-6 * v
    fd = (up - down) / 2e-6
    assert float((g3 * v).sum()) == pytest.approx(fd, rel=1e-5) and float((g1 * v).sum()) != pytest.approx(fd, rel=0.1)
    ref = {n: torch.zeros_like(params[n]) for n in names}
    for x, y in data:
        out = m64(x.double())
        for i in range(x.shape[0]):
            loss = F.cross_entropy(out[i : i + 1], y[i : i + 1], reduction="sum")
            for n, g in zip(names, torch.autograd.grad(loss, weights, retain_graph=True), strict=True):
                ref[n] += g.square()
    ref = {n: r / sum(x.shape[0] for x, _ in data) for n, r in ref.items()}
    assert_matches(estimate(model, data, "empirical"), ref, 1e-5, 1e-3)


class FunctionalQKV(nn.Module):
    """BEiT/EVA-style attention: the qkv weight is used by F.linear with a bias assembled in forward."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.qkv = nn.Linear(8, 24, bias=False)
        self.q_bias = nn.Parameter(torch.randn(8, generator=g))
        self.v_bias = nn.Parameter(torch.randn(8, generator=g))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, N, 8)
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = F.linear(input=t, weight=self.qkv.weight, bias=bias).chunk(3, dim=-1)
        att = (q @ k.transpose(1, 2) / 8**0.5).softmax(dim=-1) @ v
        return self.head(att.mean(1))

    def get_classifier(self) -> nn.Module:
        return self.head


def test_weight_used_by_a_direct_f_linear_call_matches_the_naive_loop() -> None:
    torch.manual_seed(0)
    model = FunctionalQKV().eval()
    g = gen(5)
    data = [(torch.randn(3, 3, 8, 8, generator=g), torch.randint(3, (3,), generator=g)) for _ in range(2)]
    names = ["embed.weight", "qkv.weight"]
    res = estimate(model, data, "montecarlo", params=names, mc_samples=2, generator=gen())
    ref = naive_fisher(model, data, {"mc": drawn_labels(model, data, 2)}, names)["mc"]
    assert res.per_param["qkv.weight"].abs().sum() > 0
    assert_matches(res, ref, norm_tol=1e-5, elem_rtol=1e-4)
    assert res.config["unused_params"] == []


@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, 1), (2, 1, 1), (1, 2, 2), (2, 1, 0)])
def test_depthwise_auto_path_equals_the_unfolded_contraction(stride: int, dilation: int, padding: int) -> None:
    # "auto" sends depthwise layers to the grouped weight gradient (and skips the pairwise
    # formula); the unfolded contraction is an independent computation of the same squares.
    from t2v_hub.fisher.conv import conv_spec, conv_sq_sum

    conv = nn.Conv2d(6, 6, 3, stride=stride, dilation=dilation, padding=padding, groups=6).double()
    g = gen(11)
    a = torch.randn(5, 6, 9, 9, generator=g, dtype=torch.float64)
    out_shape = conv(a).shape
    grad = torch.randn(out_shape, generator=g, dtype=torch.float64)
    spec = conv_spec(conv, "w")
    fast = conv_sq_sum(spec, a, grad, "auto", dtype=torch.float64)
    slow = conv_sq_sum(spec, a, grad, "unfold", dtype=torch.float64, pairwise_max=0)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("side", "kernel", "stride", "dilation", "padding", "same"), [
    (1, 5, 1, 1, 2, False),  # lite0's last stages at 32 px: a 1x1 map padded to 5x5
    (3, 3, 1, 1, 0, False),  # no padding
    (5, 5, 2, 1, 0, False),  # strided
    (5, 3, 1, 2, 0, False),  # dilated
    (2, 5, 2, 1, 0, True),   # TF-"same" padding outside the conv (timm's Conv2dSame), asymmetric
])
def test_depthwise_one_position_path_equals_the_unfolded_contraction(side, kernel, stride, dilation, padding,
                                                                     same) -> None:
    """Depthwise layers with a single output position take the shifted-product form
    (conv.DEPTHWISE_SHIFT_MAX_POSITIONS); the unfolded contraction is the independent reference."""
    from t2v_hub.fisher.conv import DEPTHWISE_SHIFT_MAX_POSITIONS, conv_spec, conv_sq_sum

    conv = (Conv2dSame(7, 7, kernel, stride=stride, groups=7) if same else
            nn.Conv2d(7, 7, kernel, stride=stride, dilation=dilation, padding=padding, groups=7)).double()
    g = gen(13)
    a = torch.randn(6, 7, side, side, generator=g, dtype=torch.float64)
    out_shape = conv(a).shape
    assert out_shape[2:].numel() <= DEPTHWISE_SHIFT_MAX_POSITIONS  # the case under test
    grad = torch.randn(out_shape, generator=g, dtype=torch.float64)
    spec = conv_spec(conv, "w")
    fast = conv_sq_sum(spec, a, grad, "auto", dtype=torch.float64)
    slow = conv_sq_sum(spec, a, grad, "unfold", dtype=torch.float64, pairwise_max=0)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
    assert float(fast.abs().sum()) > 0


class OnePositionDepthwise(nn.Module):
    """A depthwise layer whose output is a single position, between dense ones (lite0 at 32 px)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2)  # 3x3 -> 1x1
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8)  # 1x1 -> 1x1
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.dw(torch.tanh(self.stem(x)))).flatten(1))


def test_one_position_depthwise_matches_the_naive_loop() -> None:
    torch.manual_seed(0)
    model = OnePositionDepthwise().eval()
    g = gen(17)
    data = [(torch.randn(4, 3, 3, 3, generator=g), torch.randint(3, (4,), generator=g)) for _ in range(2)]
    names = ["stem.weight", "dw.weight"]
    res = estimate(model, data, "montecarlo", params=names, mc_samples=2, generator=gen())
    ref = naive_fisher(model, data, {"mc": drawn_labels(model, data, 2)}, names)["mc"]
    assert_matches(res, ref, norm_tol=1e-5, elem_rtol=1e-4)


class GramNet(nn.Module):
    """Convolutions with few output positions and many channels, where ``filter_means`` takes the
    Gram path: TF-'same' padding outside the conv, a stride, a dilation and a Conv1d."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.same = Conv2dSame(32, 48, 3, stride=2)  # 6x6 -> 3x3, padding (0, 1) outside the conv
        self.dilated = nn.Conv2d(48, 64, 3, padding=2, dilation=2)
        self.seq = nn.Conv1d(64, 40, 3, padding=1)
        self.head = nn.Linear(40, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.stem(x))
        x = F.gelu(self.same(x))
        x = torch.tanh(self.dilated(x))
        x = torch.sigmoid(self.seq(x.flatten(2)))
        return self.head(x.mean(dim=2))


@pytest.mark.parametrize("method", ["montecarlo", "empirical"])
@pytest.mark.parametrize("name", ["gram", "hand", "test_resnet", "tiny_tnt"])
def test_filter_means_equal_the_naive_loops_filter_means(name: str, method: str) -> None:
    """filter_means=True: every weight's entry is its filter's mean of the fp64 naive loop's diagonal."""
    from t2v_hub.fisher.conv import conv_spec, filter_sums_cheaper

    if name == "gram":
        torch.manual_seed(0)
        model: nn.Module = GramNet().eval()
        g = gen(3)
        data = [(torch.randn(3, 3, 6, 6, generator=g), torch.randint(5, (3,), generator=g)) for _ in range(2)]
        targets = {"mc3": drawn_labels(model, data, 3), "empirical": [y.unsqueeze(0) for _, y in data]}
        ref_all = naive_fisher(model, data, targets, filter_parameter_names(model))
        # The Gram path must actually run here: three of the four convs qualify.
        lengths = {"same": 9, "dilated": 9, "seq": 9, "stem": 36}
        assert sum(filter_sums_cheaper(conv_spec(getattr(model, n), n), L) for n, L in lengths.items()) == 3
    else:
        model, data, ref_all = reference(name)
    mc = 3 if method == "montecarlo" else 1
    ref = ref_all["empirical" if method == "empirical" else "mc3"]
    res = estimate(model, data, method, mc_samples=mc, generator=gen(), filter_means=True)
    assert res.config["filter_means"] is True
    for n, r in ref.items():
        got = res.per_param[n]
        assert got.shape == r.shape
        want = r.reshape(r.shape[0], -1).mean(1)
        got_means = got.reshape(got.shape[0], -1)
        torch.testing.assert_close(got_means.mean(1).double(), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
