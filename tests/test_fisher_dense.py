"""Dense (pixel-wise) outputs: the pixel-wise softmax and the unit-variance Gaussian.

The estimator is checked against a naive loop over samples (autograd of one sample's
own summed loss, in float64, with the very targets the estimator drew), against the
closed form of a linear Gaussian model, and on malformed targets.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from t2v_hub.errors import FisherError
from t2v_hub.fisher import estimate, sample_labels

SEED = 99
CLASSES = 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # tiny ops: intra-op threads only add overhead on a shared CPU
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class DenseNet(nn.Module):
    """conv -> strided conv -> nearest upsample -> 1x1 conv to C channels: a tiny decoder.

    The strided conv halves the resolution so that the upsample is not the identity,
    as in the supplement's decoder; BatchNorm in eval mode with non-trivial statistics.
    """

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.c2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.out = nn.Conv2d(8, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.c1(x)))
        h = torch.tanh(self.c2(h))
        h = F.interpolate(h, size=x.shape[-2:], mode="nearest")
        return self.out(h)


MEASURED = ["c1.weight", "c2.weight", "out.weight"]


def make_model(out_channels: int) -> nn.Module:
    torch.manual_seed(0)
    model = DenseNet(out_channels)
    model.bn.running_mean.uniform_(-0.2, 0.2)
    model.bn.running_var.uniform_(0.5, 1.5)
    return model.eval()


def make_data(likelihood: str, batches: int = 2, bs: int = 3, size: int = 6) -> list:
    """Inputs with dataset targets of the shape each likelihood expects."""
    g = gen(5)
    out = []
    for _ in range(batches):
        x = torch.randn(bs, 3, size, size, generator=g)
        if likelihood == "categorical":
            y = torch.randint(CLASSES, (bs, size, size), generator=g)
        else:
            y = torch.randn(bs, 2, size, size, generator=g)
        out.append((x, y))
    return out


def naive_fisher(model: nn.Module, data: list, targets: list[torch.Tensor], likelihood: str) -> dict:
    """For each sample and draw: grad of that sample's pixel-summed NLL (fp64), squared; / N, / draws."""
    model = copy.deepcopy(model).double()
    params = dict(model.named_parameters())
    weights = [params[n] for n in MEASURED]
    sums = {n: torch.zeros_like(params[n]) for n in MEASURED}
    draws = targets[0].shape[0]
    for (x, _), t in zip(data, targets, strict=True):
        for i in range(x.shape[0]):
            out = model(x[i : i + 1].double())
            for s in range(draws):
                if likelihood == "categorical":
                    loss = F.cross_entropy(out, t[s, i : i + 1].long(), reduction="sum")
                else:
                    loss = 0.5 * (t[s, i : i + 1].double() - out).square().sum()
                grads = torch.autograd.grad(loss, weights, retain_graph=True)
                for n, g in zip(MEASURED, grads, strict=True):
                    sums[n] += g.square()
    count = sum(x.shape[0] for x, _ in data)
    return {n: v / (count * draws) for n, v in sums.items()}


def assert_close_rel(result, ref: dict, tol: float = 1e-5) -> None:
    assert set(result.per_param) == set(ref)
    for name, r in ref.items():
        got = result.per_param[name].double()
        assert got.shape == r.shape
        err = float((got - r).norm() / r.norm())
        assert err < tol, (name, err)


@pytest.mark.parametrize("method", ["montecarlo", "empirical"])
@pytest.mark.parametrize("likelihood", ["categorical", "gaussian"])
def test_dense_equals_naive_loop(likelihood: str, method: str) -> None:
    model = make_model(CLASSES if likelihood == "categorical" else 2)
    data = make_data(likelihood)
    mc = 2
    if method == "montecarlo":
        g = gen()  # the estimator's draws, reproduced: same generator, same order, same outputs
        with torch.no_grad():
            targets = [sample_labels(model(x), mc, g, likelihood) for x, _ in data]
    else:
        targets = [y.unsqueeze(0) for _, y in data]
    ref = naive_fisher(model, data, targets, likelihood)
    res = estimate(model, data, method, params=MEASURED, mc_samples=mc, generator=gen(), likelihood=likelihood)
    assert res.num_samples == 6 and res.config["likelihood"] == likelihood
    assert_close_rel(res, ref)
    # Sanity of the reference itself: the targets matter (else the test could not fail).
    if method == "empirical":
        shuffled = [y.flip(0).unsqueeze(0) for _, y in data]
        other = naive_fisher(model, data, shuffled, likelihood)
        assert float((other["out.weight"] - ref["out.weight"]).norm() / ref["out.weight"].norm()) > 1e-3


def test_dense_categorical_draws_follow_the_pixel_softmax() -> None:
    """One class per pixel from softmax over dim 1: frequencies match the probabilities."""
    logits = torch.tensor([[0.0, 1.0, -1.0], [2.0, 0.0, 0.0]]).t().reshape(1, 3, 1, 2)  # (B=1, C=3, 1, 2)
    draws = sample_labels(logits, 20000, gen(1), "categorical")
    assert draws.shape == (20000, 1, 1, 2) and draws.dtype == torch.int64
    probs = torch.softmax(logits, dim=1)[0, :, 0]  # (C, 2)
    for pixel in range(2):
        freq = torch.bincount(draws[:, 0, 0, pixel], minlength=3).double() / 20000
        torch.testing.assert_close(freq, probs[:, pixel].double(), atol=0.015, rtol=0)


def test_classification_draws_unchanged_by_dense_support() -> None:
    """(B, C) logits draw exactly what a row-wise multinomial draws (old behaviour)."""
    logits = torch.randn(5, 4, generator=gen(2))
    old = torch.multinomial(torch.softmax(logits, -1), 3, replacement=True, generator=gen(3)).t()
    assert torch.equal(sample_labels(logits, 3, gen(3)), old)


def test_gaussian_draws_are_mean_plus_unit_noise() -> None:
    f = torch.full((4, 2, 5, 5), 3.0)
    y = sample_labels(f, 50, gen(4), "gaussian")
    assert y.shape == (50, 4, 2, 5, 5)
    assert abs(float(y.mean()) - 3.0) < 0.03 and abs(float(y.std()) - 1.0) < 0.03


def test_gaussian_linear_closed_form() -> None:
    """f = W x with unit variance: the score of W_kj is (y_k - f_k) x_j and E[(y_k - f_k)^2] = 1,
    so the true Fisher is E[x_j^2] for every output k -- exact, whatever the draws.
    The empirical Fisher with y = f + 1 (residual 1 everywhere) equals it too."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3, bias=False).double()
    x = torch.randn(40, 4, dtype=torch.float64) * torch.tensor([0.5, 1.0, 2.0, 3.0], dtype=torch.float64)
    expected = (x**2).mean(0).expand(3, 4)
    with torch.no_grad():
        y = model(x) + 1.0
    data = [(x[:16], y[:16]), (x[16:], y[16:])]
    emp = estimate(model, data, "empirical", likelihood="gaussian")
    torch.testing.assert_close(emp.per_param["weight"].double(), expected, rtol=1e-6, atol=0)
    # Montecarlo: each draw's score squared is r^2 x^2 with r ~ N(0,1); averaged over many
    # draws it converges to the closed form (1/sqrt(draws) noise).
    mc = estimate(model, data, "montecarlo", likelihood="gaussian", mc_samples=400, generator=gen())
    rel = float((mc.per_param["weight"].double() - expected).norm() / expected.norm())
    assert rel < 0.05, rel


@pytest.mark.parametrize(
    ("likelihood", "bad_y"),
    [
        ("categorical", torch.zeros(3, 5, 6, dtype=torch.long)),  # wrong spatial shape
        ("categorical", torch.zeros(3, 6, 6)),  # float class ids
        ("gaussian", torch.zeros(3, 2, 6)),  # wrong shape
        ("gaussian", torch.zeros(3, 2, 6, 6, dtype=torch.long)),  # integer regression target
    ],
)
def test_bad_targets_raise_one_line(likelihood: str, bad_y: torch.Tensor) -> None:
    model = make_model(CLASSES if likelihood == "categorical" else 2)
    x = torch.randn(3, 3, 6, 6, generator=gen(6))
    with pytest.raises(FisherError) as info:
        estimate(model, [(x, bad_y)], "empirical", params=MEASURED, likelihood=likelihood)
    msg = str(info.value)
    assert "\n" not in msg and likelihood in msg and str(tuple(bad_y.shape)) in msg


def test_unknown_likelihood_rejected() -> None:
    with pytest.raises(FisherError, match="gaussian"):
        estimate(make_model(2), make_data("gaussian"), "montecarlo", likelihood="poisson")
