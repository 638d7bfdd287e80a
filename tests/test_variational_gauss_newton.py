"""The Gauss-Newton fixed point of the variational Fisher (``optimizer="gauss_newton"``).

Three references that cannot drift with the code:

1. Closed form. With a loss quadratic in the measured layer's outputs (diagonal output Hessian
   ``a_f``), the Gauss-Newton slope is the exact slope, and the Rademacher factorisation is
   exact per draw (``r² = 1``): one step from the reference start lands on
   ``Λ_f = 2 H̄_f / β + λ²`` (``H̄`` by float64 finite differences), up to float32 rounding. The
   measured worst relative error over the five layer types is 5e-7; the tolerance 1e-5 is 20x
   that, and the ``β KL`` convention (``Λ = H/β + λ²``) or a wrong receptive field would miss
   it by tens of percent.
2. A naive per-sample, per-class autograd loop for the curvature at each noisy output,
   ``½ Σ_b Σ_p e_{bfp} Σ_c p_{bc} (∂ log p_{bc} / ∂o_{bfp})² / B``, with the input energy
   ``e`` recomputed from the layer's input by a plain convolution with a ones kernel.
3. The sampled factorisations (one label draw; Rademacher for a custom loss) averaged over many
   draws against that exact value.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from torch import Tensor, nn

from t2v_hub.fisher import _variational_gauss_newton as GN
from t2v_hub.fisher._variational_layers import resolve_layers
from t2v_hub.fisher._variational_run import OPTIMIZERS, install_noise
from t2v_hub.fisher.variational import estimate_variational
from t2v_hub.probes.layout import filter_parameter_names

sys.path.insert(0, str(Path(__file__).parent))
from test_variational import (  # noqa: E402
    BETA_CF,
    _closed_form_case,
    _exact_filter_hessian,
    _exact_fisher,
    _run_cf,
    _small_run,
    _task,
)

CF_TOL = 1e-5
KINDS = ["linear", "linear_sequence", "conv_grouped_strided", "conv2d_same", "conv_reflect"]


@pytest.mark.parametrize("learn_prior", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_one_step_reaches_the_closed_form(kind: str, learn_prior: bool) -> None:
    model, x, t, loss = _closed_form_case(kind)
    h = _exact_filter_hessian(model, x, t, loss)
    res = _run_cf(model, x, t, loss, learn_prior=learn_prior, prior_precision=10.0, optimizer="gauss_newton",
                  steps=3)
    prec, lam2 = res.extras["precision/0.weight"], res.extras["prior/0.weight"]
    if learn_prior:
        assert abs(float(lam2) - 10.0) > 1.0  # the prior really moved, and the closed form follows it
    expected = 2.0 * h / BETA_CF + lam2
    assert ((prec - expected).abs() / expected).max() < CF_TOL
    cfg = res.config
    assert cfg["optimizer"] == "gauss_newton" and cfg["lr"] is None and cfg["line_search"] is None
    # It got there at the first step: the two later steps did not move it.
    assert cfg["log_prec_change"] > 0.5 and cfg["late_change_fraction"] < 1e-5
    assert cfg["nonpositive_slope_end"] == 0.0


def _recorded_forward(model: nn.Module, x: Tensor, var_init_scale: float = 0.05):
    """One noisy forward of the working model, with every layer's input captured independently."""
    names = filter_parameter_names(model)
    layers = resolve_layers(model, names, var_init_scale, None, learn_prior=False)
    inputs: dict[str, Tensor] = {}
    taps = [layer.module.register_forward_hook(lambda m, i, o, n=layer.name: inputs.__setitem__(n, i[0].detach()))
            for layer in layers]
    record: list = []
    gen = torch.Generator().manual_seed(0)
    noise = install_noise(layers, 1e-2, gen, record=record)
    for p in model.parameters():
        p.requires_grad_(False)
    z = model(x).float()
    for hnd in taps + noise:
        hnd.remove()
    return layers, record, z, inputs


def _naive_slopes(layers, record, z: Tensor, inputs: dict[str, Tensor], floor: float = 1e-2) -> list[Tensor]:
    """½ Σ_b Σ_p e Σ_c p_c (∂ log p_c/∂o)² / B, one autograd call per (sample, class)."""
    logp = z.log_softmax(dim=1)
    p = logp.exp().detach()
    outs = [noisy for _, noisy, _ in record]
    acc = [torch.zeros_like(noisy) for noisy in outs]
    for b in range(z.shape[0]):
        for c in range(z.shape[1]):
            grads = torch.autograd.grad(logp[b, c], outs, retain_graph=True)
            for k, g in enumerate(grads):
                acc[k] += p[b, c] * g.square()
    slopes = []
    for (i, _, _), a in zip(record, acc, strict=True):
        layer = layers[i]
        x2 = inputs[layer.name].square() + floor
        if isinstance(layer.module, nn.Linear):
            energy = x2.sum(dim=-1, keepdim=True)
            slopes.append(0.5 * (energy * a).sum(dim=0) / z.shape[0])
        else:
            conv = layer.module
            ones = torch.ones(1, *conv.weight.shape[1:])
            energy = F.conv2d(x2, ones, None, conv.stride, conv.padding)
            slopes.append(0.5 * (energy * a).sum(dim=(0, 2, 3)) / z.shape[0])
    return slopes


def test_curvature_matches_a_naive_per_sample_loop() -> None:
    model, x, _ = _task(n=16)
    layers, record, z, inputs = _recorded_forward(model, x)
    got = GN.gauss_newton_slopes(layers, record, z, GN.curvature_factor("categorical", False)(z, None, None, None))
    ref = _naive_slopes(layers, record, z, inputs)
    for layer, g, r in zip(layers, got, ref, strict=True):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-9 * float(r.abs().max())), layer.name
        assert (g >= 0).all() and float(g.max()) > 0


@pytest.mark.parametrize("path", ["one label draw", "rademacher"])
def test_sampled_factorisations_are_unbiased(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y = _task(n=16)
    layers, record, z, _ = _recorded_forward(model, x)
    exact = GN.gauss_newton_slopes(layers, record, z, GN._categorical(z, y, None, None))
    if path == "one label draw":
        monkeypatch.setattr(GN, "EXACT_CLASSES", 0)  # 4 classes would otherwise be summed exactly
        factor = GN.curvature_factor("categorical", False)
    else:
        factor = GN.curvature_factor("categorical", True)  # as for a custom loss_fn = cross-entropy
    gen = torch.Generator().manual_seed(1)
    draws = 400
    mean = [torch.zeros_like(e) for e in exact]
    for _ in range(draws):
        data = F.cross_entropy(z, y)
        for m, g in zip(mean, GN.gauss_newton_slopes(layers, record, z, factor(z, y, data, gen)), strict=True):
            m += g / draws
    # Per layer (the sum over its filters): the relative error of a 400-draw mean, measured 0.3-2.0%
    # over 4 seeds for both paths; 8% is 4x the worst. A missing 1/B or p-weighting is off by 2x-16x.
    for layer, m, e in zip(layers, mean, exact, strict=True):
        assert abs(float(m.sum()) / float(e.sum()) - 1) < 0.08, layer.name


def test_converges_from_different_starts_to_the_same_estimate() -> None:
    # The real-task criterion in small: two starts (reference, narrow) end closer to each other than
    # two seeds of the same start, and the curvature ranks filters like the exact Fisher.
    model, x, y = _task()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, x.shape[0], 32)]
    names = filter_parameter_names(model)

    def run(seed: int, **kw: object):
        return estimate_variational(model, batches, generator=torch.Generator().manual_seed(seed), beta=1e-4,
                                    epochs=2, optimizer="gauss_newton", **kw)

    def vec(res) -> Tensor:
        return torch.cat([res.per_param[n].flatten(1).mean(dim=1) for n in names])

    ref, narrow, other = run(0), run(0, var_init_scale=1e-4), run(1)
    starts = (vec(ref) - vec(narrow)).norm() / vec(ref).norm()
    seeds = (vec(ref) - vec(other)).norm() / vec(ref).norm()
    assert float(starts) < float(seeds)
    cfg = ref.config
    assert cfg["nonpositive_slope_end"] == 0.0 and cfg["late_change_fraction"] < 0.05
    assert cfg["expected_loss_end"] < 2 * cfg["expected_loss_first_step"]
    exact = _exact_fisher(model, x, names)
    truth = torch.cat([exact[n].flatten(1).mean(dim=1) for n in names])
    assert spearmanr(vec(ref).numpy(), truth.numpy()).statistic > 0.8


def test_contract_deterministic_and_model_untouched() -> None:
    model, x, y = _task(n=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = _small_run(model, x, y, optimizer="gauss_newton", seed=3)
    b = _small_run(model, x, y, optimizer="gauss_newton", seed=3)
    assert all(torch.equal(a.per_param[n], b.per_param[n]) for n in a.per_param)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for m in model.modules():
        assert not m._forward_hooks
    bern = _small_run(model, x, F.one_hot(y, 4).float(), optimizer="gauss_newton", likelihood="bernoulli")
    assert all(torch.isfinite(h).all() for h in bern.per_param.values())


def test_cli_offers_every_optimiser() -> None:
    from t2v_hub.cli._common import VARIATIONAL_OPTIMIZERS

    assert VARIATIONAL_OPTIMIZERS == OPTIMIZERS


def test_trivial_cache_key_follows_the_variational_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A t0 cached under Adam (the old default) must not be returned for the Gauss-Newton default.
    from t2v_hub import constants
    from t2v_hub.trivial import trivial_embedding

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path))
    kw = dict(input_size=32, num_samples=8, quiet=True, pretrained=False)
    monkeypatch.setattr(constants, "VARIATIONAL_OPTIMIZER", "adam")
    trivial_embedding("test_efficientnet", "variational", **kw)
    monkeypatch.setattr(constants, "VARIATIONAL_OPTIMIZER", "gauss_newton")
    trivial_embedding("test_efficientnet", "variational", **kw)
    trivial_embedding("test_efficientnet", "montecarlo", **kw)
    assert len(list((tmp_path / "trivial").glob("*.safetensors"))) == 3


def test_embedding_cache_key_follows_the_variational_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from t2v_hub import constants
    from t2v_hub.config import EmbedConfig, FisherConfig
    from t2v_hub.probes import create_probe
    from t2v_hub.task2vec import cache_key

    probe = create_probe("test_efficientnet", 2, input_size=32, pretrained=False)
    meta = {"fingerprint": "abc", "dataset_id": "local:x"}

    def keys() -> tuple[str | None, str | None]:
        return tuple(cache_key(meta, probe, EmbedConfig(fisher=FisherConfig(method=m)))  # type: ignore[return-value]
                     for m in ("variational", "montecarlo"))

    var_gn, mc_gn = keys()
    monkeypatch.setattr(constants, "VARIATIONAL_OPTIMIZER", "adam")
    var_adam, mc_adam = keys()
    assert var_gn != var_adam and mc_gn == mc_adam


def test_tent_average_weights_every_batch_equally_over_two_passes() -> None:
    # Unrolled, the running average with the tent's rho gives step t the weight min(t, T+1-t)/Σ:
    # rising (the start is forgotten), falling (the last steps barely move it), and over 2 passes
    # of B batches every batch's two evaluations sum to the same weight.
    B = 7
    avg = GN._Average(2 * B)
    est = torch.zeros(2 * B)
    for t in range(1, 2 * B + 1):
        est += avg.rho(0 if t <= B else 1, t) * (F.one_hot(torch.tensor(t - 1), 2 * B).float() - est)
    per_batch = est[:B] + est[B:]
    assert torch.allclose(per_batch, torch.full((B,), 1.0 / B), atol=1e-6)
    assert est[0] < est[B - 1] and est[-1] < est[B] and float(est[-1]) == pytest.approx(1 / (B * (B + 1)))
    # Without a step count: ∝ t in the first pass, then a plain running mean.
    free = GN._Average(None)
    assert free.rho(0, 3) == pytest.approx(0.5) and free.rho(1, 10) == pytest.approx(0.1)
