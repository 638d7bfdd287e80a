"""Regression targets end to end: float label columns, Gaussian Fisher, errors, CLI.

Tiny inputs only (16x16 PNGs, ``test_efficientnet`` at 32x32) so that the file
runs in seconds on a CPU.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from t2v_hub.cli.main import main
from t2v_hub.data import load_task
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import DataError, FisherError
from t2v_hub.fisher import estimate_montecarlo_presampled
from t2v_hub.probes import create_probe
from t2v_hub.selection.distances import d_sym
from t2v_hub.task2vec import TensorTask, embed

PROBE = "test_efficientnet"


def png(a: np.ndarray) -> dict:
    buf = io.BytesIO()
    PILImage.fromarray(a).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def regression_dataset(n: int = 16, targets: list | None = None, seed: int = 0, dtype: str = "float32") -> Dataset:
    """Images whose red level is the target (plus noise): a learnable regression task."""
    rng = np.random.default_rng(seed)
    level = rng.random(n)
    imgs = []
    for v in level:
        a = (rng.random((16, 16, 3)) * 60).astype("uint8")
        a[..., 0] += np.uint8(v * 190)
        imgs.append(png(a))
    values = [float(v) * 10 + 3 for v in level] if targets is None else targets
    feats = Features({"image": Image(), "target": Value(dtype)})
    return Dataset.from_dict({"image": imgs, "target": values}, features=feats)


# ---------------------------------------------------------------- data layer


def test_float_column_is_a_standardised_regression_target() -> None:
    ds = regression_dataset(8)
    td = load_task(ds)  # the only candidate: detected without label_column
    raw = torch.tensor(ds["target"], dtype=torch.float64)
    assert td.label_kind == "regression" and td.metadata["label_kind"] == "regression"
    assert td.labels.dtype == torch.float32 and td.labels.shape == (8, 1) and td.num_classes == 1
    assert torch.allclose(td.labels[:, 0].double(), (raw - raw.mean()) / raw.std(correction=0), atol=1e-6)
    assert json.loads(td.metadata["target_mean"]) == pytest.approx([float(raw.mean())])
    assert json.loads(td.metadata["target_std"]) == pytest.approx([float(raw.std(correction=0))])
    assert td.metadata["target_dim"] == 1 and json.loads(td.metadata["label_names"]) == ["target"]
    # max_samples below 2 (there are no classes) and a fixed-length list of floats
    assert load_task(ds, max_samples=2).num_samples == 2
    vec = Dataset.from_dict(
        {"image": [png(np.zeros((4, 4, 3), "uint8"))] * 3, "y": [[1, 2], [2, 5], [3, 0]]},
        features=Features({"image": Image(), "y": List(Value("float64"), length=2)}),
    )
    tv = load_task(vec, label_column="y")
    assert tv.labels.shape == (3, 2) and tv.metadata["target_dim"] == 2
    assert torch.allclose(tv.labels.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(tv.labels.std(0, correction=0), torch.ones(2), atol=1e-6)


def test_integer_label_still_wins_over_a_float_column() -> None:
    ds = regression_dataset(4).add_column("label", [0, 1, 0, 1])
    assert load_task(ds).label_kind == "single"
    assert load_task(ds, label_column="target").label_kind == "regression"


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ([2.5] * 6, "'target' is constant .*a constant target carries no task"),
        ([1.0, 2.0, None, 3.0, math.nan, 4.0], "row 2: regression target None of column 'target' is missing"),
        ([1.0, 2.0, 3.0, math.nan, 5.0, 6.0], "row 3: regression target nan of column 'target' is not a finite"),
        ([1.0, math.inf, 3.0, 4.0, 5.0, 6.0], "row 1: regression target inf .*not a finite"),
    ],
)
def test_bad_targets_from_python(values: list, match: str) -> None:
    ds = regression_dataset(6, targets=values)
    with pytest.raises(DataError, match=match) as err:
        embed(ds, PROBE, input_size=32)
    assert "\n" not in str(err.value)


def test_one_sample_and_variational_are_refused() -> None:
    with pytest.raises(DataError, match="at least 2 samples"):
        load_task(regression_dataset(1))
    with pytest.raises(FisherError, match="variational.*regression") as err:
        embed(regression_dataset(4), PROBE, "variational", input_size=32)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- pipeline


def test_dataset_with_float_column_embeds_deterministically() -> None:
    ds = regression_dataset(12)
    stats: dict = {}
    a = embed(ds, PROBE, seed=0, input_size=32, stats=stats)
    b = embed(ds, PROBE, seed=0, input_size=32)
    m = a.metadata
    assert m["label_kind"] == "regression" and m["num_classes"] == "1" and m["label_column"] == "target"
    assert "head_train_r2" in m and "head_train_accuracy" not in m
    assert stats["head_train_r2"] <= 1.0 and math.isfinite(stats["head_final_loss"])
    assert a.config("method_config")["likelihood"] == "gaussian"
    assert a.dim == 1604 and torch.isfinite(a.vector).all() and a.norm > 0
    assert a.vector.numpy().tobytes() == b.vector.numpy().tobytes()
    for method in ("empirical", "batch"):
        e = embed(ds, PROBE, method, seed=0, input_size=32)
        assert e.metadata["label_kind"] == "regression" and torch.isfinite(e.vector).all() and e.norm > 0


def test_montecarlo_regression_fisher_equals_a_naive_per_sample_loop() -> None:
    # The pipeline's Monte Carlo Fisher with y = f + N(0, 1) drawn up front from the
    # seeded generator, against autograd on one sample at a time with the same draws.
    k, n = 2, 6
    p = create_probe(PROBE, k, input_size=32)
    g = torch.Generator().manual_seed(3)
    for q in p.head().parameters():
        q.data.normal_(0.0, 0.5, generator=g)  # a non-trivial head: f != 0
    x = torch.randn(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        feats = p.features(x)
        f = p.logits_from_features(feats).float()
    result = estimate_montecarlo_presampled(
        p.model, x, p.logits_from_features(feats).detach(), params=p.measured_params(), mc_samples=1,
        generator=torch.Generator().manual_seed(7), likelihood="gaussian", shard=torch.arange(n), batch_size=4,
    )
    y = f + torch.randn((1, n, k), generator=torch.Generator().manual_seed(7))[0]
    names = p.measured_params()[:6] + p.measured_params()[-3:]
    weights = [p.model.get_parameter(name) for name in names]
    naive = [torch.zeros_like(w) for w in weights]
    for w in weights:
        w.requires_grad_(True)
    try:
        for i in range(n):
            loss = 0.5 * (y[i] - p.model(x[i : i + 1])[0]).square().sum()
            for acc, gr in zip(naive, torch.autograd.grad(loss, weights), strict=True):
                acc += gr.square()
    finally:
        for w in weights:
            w.requires_grad_(False)
    for name, acc in zip(names, naive, strict=True):
        assert acc.abs().sum() > 0
        torch.testing.assert_close(result.per_param[name], acc / n, rtol=1e-4, atol=1e-9)
    # ... and the draws matter: other noise gives another Fisher.
    other = estimate_montecarlo_presampled(
        p.model, x, p.logits_from_features(feats).detach(), params=p.measured_params(), mc_samples=1,
        generator=torch.Generator().manual_seed(8), likelihood="gaussian", shard=torch.arange(n), batch_size=4,
    )
    assert not torch.allclose(other.per_param[names[0]], result.per_param[names[0]], rtol=1e-3)


def test_montecarlo_regression_is_shard_invariant() -> None:
    p = create_probe(PROBE, 2, input_size=32)
    g = torch.Generator().manual_seed(1)
    for q in p.head().parameters():
        q.data.normal_(0.0, 0.5, generator=g)
    x = torch.randn(6, 3, 32, 32, generator=g)
    with torch.no_grad():
        feats = p.features(x)

    def run(shard: torch.Tensor):
        return estimate_montecarlo_presampled(
        p.model, x, p.logits_from_features(feats).detach(), params=p.measured_params(), mc_samples=2,
        generator=torch.Generator().manual_seed(5), likelihood="gaussian", shard=shard, batch_size=4,
    ).sums

    whole, first, second = run(torch.arange(6)), run(torch.arange(3)), run(torch.arange(3, 6))
    name = p.measured_params()[0]
    torch.testing.assert_close(first[name] + second[name], whole[name], rtol=1e-5, atol=1e-10)


def test_the_target_signal_shapes_the_embedding() -> None:
    g = torch.Generator().manual_seed(0)
    n = 30
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    t = torch.linspace(-1.5, 1.5, n)
    x[:, 0] += t[:, None, None]  # the target is the red level
    y = 4.0 * t + 0.1 * torch.randn(n, generator=g)
    y_perm = y[torch.randperm(n, generator=torch.Generator().manual_seed(5))]
    a = embed(TensorTask(x, y, label_kind="regression"), PROBE, seed=0, input_size=32)
    a2 = embed(TensorTask(x, y, label_kind="regression"), PROBE, seed=1, input_size=32)
    b = embed(TensorTask(x, y_perm, label_kind="regression"), PROBE, seed=0, input_size=32)
    assert a.metadata["label_kind"] == "regression"
    assert float(a.metadata["head_train_r2"]) > float(b.metadata["head_train_r2"])
    assert d_sym(a, b) > 2 * d_sym(a, a2) and d_sym(a, b) > 1e-3


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reg")
    regression_dataset(12).save_to_disk(str(root / "good"))
    regression_dataset(6, targets=[7.0] * 6).save_to_disk(str(root / "constant"))
    regression_dataset(6, targets=[1.0, 2.0, 3.0, 4.0, math.nan, 6.0]).save_to_disk(str(root / "nan"))
    return root


def test_cli_embeds_a_saved_regression_dataset(saved: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "reg.safetensors"
    args = ["embed", "--dataset", str(saved / "good"), "--label-column", "target", "--probe", PROBE,
            "--input-size", "32", "--quiet", "--no-cache", "--out", str(out), "--format", "json"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert json.loads(text[text.index("{") :])["num_samples"] == 12
    e = Task2VecEmbedding.load(out)
    assert e.metadata["label_kind"] == "regression" and e.metadata["label_column"] == "target"
    assert e.dim == 1604 and torch.isfinite(e.vector).all() and e.norm > 0
    assert json.loads(e.metadata["target_std"])[0] > 0


@pytest.mark.parametrize(("name", "needle"), [("constant", "constant target"), ("nan", "row 4")])
def test_cli_refuses_bad_targets(saved: Path, tmp_path: Path, capsys, name: str, needle: str) -> None:
    out = tmp_path / "x.safetensors"
    args = ["embed", "--dataset", str(saved / name), "--label-column", "target", "--probe", PROBE,
            "--input-size", "32", "--quiet", "--no-cache", "--out", str(out)]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "'target'" in err
    assert not out.exists()
