"""MODEL2VEC bias="layer": the weighted d_sym against a naive loop, training that finds the
informative layer, the artifact, and `selector train` with the probe's own layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import SelectorError
from t2v_hub.selection.distances import cdist, sym_block
from t2v_hub.selection.layer_weights import layer_sums, probe_layer_ids, weighted_from_sums
from t2v_hub.selection.metrics import evaluate_selection
from t2v_hub.selection.model2vec import Model2Vec, SelectorConfig
from t2v_hub.selection.training import loo_model2vec, train_model2vec


def naive_weighted_dsym(a: list[float], b: list[float], w: list[float]) -> float:
    """The definition, one filter at a time: cosine of u = a/(a+b), v = b/(a+b) with weights w."""
    uv = uu = vv = 0.0
    for x, y, k in zip(a, b, w, strict=True):
        if x + y <= 0:
            continue
        u, v = x / (x + y), y / (x + y)
        uv, uu, vv = uv + k * u * v, uu + k * u * u, vv + k * v * v
    return 1.0 - uv / math.sqrt(uu * vv)


def test_weighted_dsym_matches_the_naive_definition() -> None:
    g = torch.Generator().manual_seed(0)
    A, B = torch.rand(3, 10, generator=g).double(), torch.rand(4, 10, generator=g).double()
    A[0, 2] = B[:, 2] = 0.0  # a filter dead in both tasks contributes nothing
    w = torch.rand(10, generator=g).double() + 0.1
    got = sym_block(A, B, w)
    for i in range(3):
        for j in range(4):
            assert float(got[i, j]) == pytest.approx(naive_weighted_dsym(A[i].tolist(), B[j].tolist(), w.tolist()),
                                                     abs=1e-12)
    # Equal weights are the paper's d_sym, whatever their value.
    assert torch.allclose(sym_block(A, B, torch.full((10,), 3.0, dtype=torch.float64)), sym_block(A, B), atol=1e-12)
    # The per-layer sums give the same distances for any per-layer weights.
    layers = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 0])
    theta = torch.tensor([0.3, -1.0, 0.7], dtype=torch.float64)
    via_sums = weighted_from_sums(layer_sums(A, B, layers, 3), theta)
    assert torch.allclose(via_sums, sym_block(A, B, theta.exp()[layers]), atol=1e-12)
    assert torch.allclose(cdist(A.float(), B.float(), theta.exp()[layers].float()), via_sums.float(), atol=1e-6)


def two_layer_zoo(T: int = 14, E: int = 6, seed: int = 0):
    """Layer 0 (12 filters) decides transfer; layer 1 (48 filters) is noise that dominates plain d_sym."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 12, generator=g)

    def sample(n: int, c: torch.Tensor) -> torch.Tensor:
        signal = torch.exp(centres[c] + 0.3 * torch.randn(n, 12, generator=g))
        noise = torch.exp(1.5 * torch.randn(n, 48, generator=g))
        return torch.cat([signal, noise], dim=1)

    X = sample(T, torch.arange(T) % 3)
    F = sample(E, torch.arange(E) % 3)
    layers = torch.cat([torch.zeros(12, dtype=torch.long), torch.ones(48, dtype=torch.long)])
    truth = sym_block(X, F, torch.cat([torch.ones(12), torch.full((48,), 1e-6)]))
    errors = 0.2 + 0.5 * truth + 0.002 * torch.randn(T, E, generator=g)
    t0 = torch.exp(torch.zeros(60))
    return X, F, t0, errors, layers


def test_layer_training_finds_the_informative_layer() -> None:
    X, F, t0, errors, layers = two_layer_zoo()
    cfg = SelectorConfig(bias="layer", alpha=0.0, layer_decay=0.0)
    sel = train_model2vec(X, F, errors, t0, cfg, layers=layers)
    w = sel.info["layer_weights"]
    assert sel.info["num_layers"] == 2 and w[0] > 3 * w[1]
    assert sel.log_scale is None and torch.equal(sel.offset, torch.zeros(6)) and sel.filter_weights is not None
    # Held out task by task, the learned metric chooses better than d_sym, which the noise layer misleads.
    loo = loo_model2vec(X, F, errors, t0, cfg, layers=layers)
    plain = evaluate_selection(errors, cdist(X, F))
    learned = evaluate_selection(errors, loo)
    assert learned["relative_error_increase"] < 0.5 * plain["relative_error_increase"]
    assert learned["top1"] > plain["top1"]
    # A strong pull towards theta = 0 gives back d_sym's choices.
    pinned = train_model2vec(X, F, errors, t0, SelectorConfig(bias="layer", alpha=0.0, layer_decay=100.0),
                             layers=layers)
    assert max(abs(math.log(v)) for v in pinned.info["layer_weights"]) < 0.01


def test_layer_selector_needs_layers_and_round_trips(tmp_path: Path) -> None:
    X, F, t0, errors, layers = two_layer_zoo(T=6, E=4, seed=1)
    with pytest.raises(SelectorError, match="layers="):
        train_model2vec(X, F, errors, t0, SelectorConfig(bias="layer"))
    with pytest.raises(SelectorError, match="one non-negative layer id per filter"):
        train_model2vec(X, F, errors, t0, SelectorConfig(bias="layer"), layers=layers[:10])
    sel = train_model2vec(X, F, errors, t0, SelectorConfig(bias="layer", layer_epochs=20), layers=layers,
                          expert_ids=[f"org/m{j}" for j in range(4)])
    sel.save(tmp_path / "s.safetensors")
    back = Model2Vec.load(tmp_path / "s.safetensors")
    assert back.filter_weights is not None and sel.filter_weights is not None
    assert torch.equal(back.filter_weights, sel.filter_weights) and back.config == sel.config
    assert torch.equal(back.scores(X, back.expert_ids, F), sel.scores(X, sel.expert_ids, F))
    # The scores are the weighted d_asym, computed independently here.
    w = sel.filter_weights
    want = (sym_block(X, F, w) - sel.alpha * sym_block(t0[None], F, w)) + sel.offset
    assert torch.allclose(sel.scores(X, sel.expert_ids, F), want, atol=1e-6)
    bad = Model2Vec(**{**back.__dict__, "filter_weights": -back.filter_weights})
    with pytest.raises(SelectorError, match="filter_weights"):
        Model2Vec.from_bytes(bad.to_bytes())


def test_cli_selector_train_layer_uses_the_probes_layout(tmp_path: Path, capsys) -> None:
    layers = probe_layer_ids("test_efficientnet")
    from t2v_hub.probes import create_probe

    layout_hash = create_probe("test_efficientnet", num_classes=2, pretrained=False).layout.hash()
    dim, L = layers.numel(), int(layers.max()) + 1
    compat = dict(probe="test_efficientnet", weights_sha256="w" * 8, layout_hash=layout_hash, method="montecarlo")
    g = torch.Generator().manual_seed(2)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "experts").mkdir()
    X, F = torch.exp(torch.randn(6, dim, generator=g)), torch.exp(torch.randn(3, dim, generator=g))
    for i, x in enumerate(X):
        Task2VecEmbedding.create(x, dataset_id=f"task-{i}", **compat).save(tmp_path / "tasks" / f"t{i}.safetensors")
    for j, f in enumerate(F):
        Task2VecEmbedding.create(f, dataset_id=f"src-{j}", **compat).save(tmp_path / "experts" / f"org--m{j}.safetensors")
    Task2VecEmbedding.create(torch.ones(dim), **compat).save(tmp_path / "t0.safetensors")
    errors = torch.rand(6, 3, generator=g)
    (tmp_path / "errors.json").write_text(json.dumps({"tasks": [f"task-{i}" for i in range(6)],
                                                      "experts": [f"org/m{j}" for j in range(3)],
                                                      "errors": errors.tolist()}))
    common = ["--errors", str(tmp_path / "errors.json"), "--tasks", str(tmp_path / "tasks"),
              "--experts", str(tmp_path / "experts"), "--trivial", str(tmp_path / "t0.safetensors")]
    out = tmp_path / "sel.safetensors"
    assert main(["selector", "train", *common, "--layer-epochs", "5", "--out", str(out)]) == 0  # layer: the default
    sel = Model2Vec.load(out)
    assert sel.config.bias == "layer" and sel.info["num_layers"] == L and sel.filter_weights is not None
    capsys.readouterr()
    # Embeddings whose layout is not the probe's (another timm, other options) are refused in one line.
    for p in [*(tmp_path / "tasks").iterdir(), *(tmp_path / "experts").iterdir(), tmp_path / "t0.safetensors"]:
        e = Task2VecEmbedding.load(p)
        Task2VecEmbedding.create(e.vector, **{**e.metadata, "layout_hash": "0" * 16}).save(p)
    assert main(["selector", "train", *common, "--out", str(tmp_path / "other.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layout" in err[0] and "--bias filter" in err[0]
    assert not (tmp_path / "other.safetensors").exists()
    # An embedding of another size under the same layout hash (a damaged file) is refused too.
    from t2v_hub.selection.layer_weights import layer_ids

    with pytest.raises(SelectorError, match=f"has {dim} filters, the embeddings {dim - 1}"):
        layer_ids(Task2VecEmbedding.create(torch.ones(dim - 1), **compat))
    assert torch.equal(layer_ids(Task2VecEmbedding.create(torch.ones(dim), **compat)), layers)


def test_a_selector_file_without_bias_records_what_it_holds() -> None:
    """Files written before `bias` existed must not take today's default as their own."""
    from safetensors.torch import load as st_load
    from safetensors.torch import save as st_save

    X, F, t0, errors, layers = two_layer_zoo(T=6, E=4, seed=3)
    for bias, want in (("layer", "layer"), ("filter", "both"), ("scalar", "scalar")):
        sel = train_model2vec(X, F, errors, t0, SelectorConfig(bias=bias, epochs=2, layer_epochs=2), layers=layers)
        data = sel.to_bytes()
        n = int.from_bytes(data[:8], "little")
        meta = json.loads(data[8 : 8 + n])["__metadata__"]
        config = json.loads(meta["config"])
        del config["bias"]
        old = st_save(st_load(data), metadata={**meta, "config": json.dumps(config)})
        assert Model2Vec.from_bytes(old).config.bias == want
