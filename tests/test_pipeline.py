"""The embedding pipeline and the engine's CLI, end to end on tiny real inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_imagefolder
from PIL import Image

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import DataError
from t2v_hub.task2vec import TensorTask, embed
from t2v_hub.trivial import trivial_embedding

PROBE = "test_efficientnet"


def tensors(n: int = 24, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.5
    x[:, 0] += y[:, None, None].float()  # learnable signal in the red channel
    return x, y


@pytest.fixture(scope="module")
def imagefolder(tmp_path_factory) -> Path:
    return write_imagefolder(tmp_path_factory.mktemp("imf"), ["cat", "dog", "fish"], 8, (36, 40))


def test_same_seed_same_bytes_different_seed_close_but_different() -> None:
    a = embed(tensors(), PROBE, seed=0, input_size=32)
    b = embed(tensors(), PROBE, seed=0, input_size=32)
    c = embed(tensors(), PROBE, seed=1, input_size=32)
    assert a.vector.numpy().tobytes() == b.vector.numpy().tobytes()
    assert not torch.equal(a.vector, c.vector)
    from t2v_hub.selection.distances import d_sym

    assert d_sym(a, c) < 0.5 * d_sym(a, trivial_embedding(PROBE, "montecarlo", input_size=32))


def test_metadata_records_provenance() -> None:
    x, y = tensors()
    e = embed(TensorTask(x, y, {"dataset_id": "unit/test"}), PROBE, "empirical", seed=3, input_size=32, max_samples=20)
    m = e.metadata
    assert m["probe"] == PROBE and m["method"] == "empirical" and m["seed"] == "3"
    assert m["num_samples"] == "20" and m["num_classes"] == "3" and m["dataset_id"] == "unit/test"
    assert json.loads(m["input_size"]) == [3, 32, 32] and len(m["weights_sha256"]) == 64
    assert e.dim == int(m["dim"]) == 1604 and "timm_version" in m and "head_config" in m


def test_embedding_reflects_the_task() -> None:
    # Same images, informative vs shuffled labels: the tasks must be told apart.
    x, y = tensors(30)
    y_perm = y[torch.randperm(30, generator=torch.Generator().manual_seed(5))]
    from t2v_hub.selection.distances import d_sym

    a = embed((x, y), PROBE, seed=0, input_size=32)
    a2 = embed((x, y), PROBE, seed=1, input_size=32)
    b = embed((x, y_perm), PROBE, seed=0, input_size=32)
    assert d_sym(a, a2) < d_sym(a, b)


@pytest.mark.filterwarnings("ignore:variational Fisher not converged")  # a few steps on purpose
@pytest.mark.parametrize("method", ["batch", "variational"])
def test_other_estimators_run_through_the_pipeline(method: str) -> None:
    opts = {"epochs": 1} if method == "variational" else {}
    e = embed(tensors(16), PROBE, method, seed=0, input_size=32, fisher_options=opts)
    assert e.method == method and torch.isfinite(e.vector).all() and e.vector.abs().sum() > 0


@pytest.mark.filterwarnings("ignore:variational Fisher not converged")  # a few steps on purpose
def test_variational_makes_every_requested_pass_through_the_pipeline() -> None:
    # Regression: the pipeline once handed the estimator a one-shot generator, so
    # it stopped after the first pass whatever epochs/steps said.
    e = embed(tensors(16), PROBE, "variational", seed=0, input_size=32, batch_size=8,
              fisher_options={"epochs": 3})
    assert e.config("method_config")["steps_done"] == 3 * 2
    s = embed(tensors(16), PROBE, "variational", seed=0, input_size=32, batch_size=8,
              fisher_options={"steps": 7})
    assert s.config("method_config")["steps_done"] == 7


def test_max_samples_below_classes_and_one_class_refused() -> None:
    x, y = tensors()
    with pytest.raises(DataError):
        embed((x, torch.zeros_like(y)), PROBE, input_size=32)
    with pytest.raises(DataError, match="max"):
        embed((x, y), PROBE, input_size=32, max_samples=0)


def test_cli_embed_and_distance(imagefolder: Path, tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    common = ["--dataset", str(imagefolder), "--probe", PROBE, "--input-size", "32", "--quiet", "--no-cache"]
    assert main(["embed", *common, "--seed", "0", "--out", str(a)]) == 0
    assert main(["embed", *common, "--seed", "1", "--max-samples", "12", "--out", str(b), "--format", "json"]) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{") :])
    assert summary["num_samples"] == 12 and summary["num_classes"] == 3 and summary["dim"] == 1604
    assert Task2VecEmbedding.load(a).metadata["dataset_id"] == f"local:{imagefolder.name}"  # no local path in cards
    assert main(["distance", str(a), str(b)]) == 0
    d = float(capsys.readouterr().out.strip())
    assert 0.0 < d < 1.0
    assert main(["distance", str(a), str(b), "--asymmetric", "--alpha", "0.15"]) == 0
    d_asym = float(capsys.readouterr().out.strip())
    assert d_asym < d  # the trivial-task term is subtracted


def test_cli_bad_inputs(imagefolder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.safetensors"
    base = ["embed", "--dataset", str(imagefolder), "--input-size", "32", "--quiet"]
    assert main([*base, "--probe", "resnet33", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "resnet34" in err
    assert main([*base, "--probe", PROBE, "--max-samples", "2", "--out", str(out)]) == 2
    assert "max" in capsys.readouterr().err.lower()
    assert main([*base, "--probe", PROBE, "--out", str(tmp_path / "missing" / "x.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()
    one = tmp_path / "one" / "only"
    one.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(one / "a.png")
    Image.new("RGB", (8, 8)).save(one / "b.png")
    assert main(["embed", "--dataset", str(one.parent), "--probe", PROBE, "--out", str(out), "--quiet"]) == 2
    assert "class" in capsys.readouterr().err
    # embeddings of different probes cannot be compared
    a = Task2VecEmbedding.create(torch.rand(4), probe="p1", weights_sha256="w", layout_hash="l", method="montecarlo")
    b = Task2VecEmbedding.create(torch.rand(4), probe="p2", weights_sha256="w", layout_hash="l", method="montecarlo")
    a.save(tmp_path / "p1.safetensors")
    b.save(tmp_path / "p2.safetensors")
    assert main(["distance", str(tmp_path / "p1.safetensors"), str(tmp_path / "p2.safetensors")]) == 2
    assert "probe" in capsys.readouterr().err
    assert not list(tmp_path.glob(".*.tmp"))


def test_cache_returns_identical_embedding(imagefolder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    stats1: dict = {}
    stats2: dict = {}
    a = embed(str(imagefolder), PROBE, input_size=32, cache=True, stats=stats1)
    b = embed(str(imagefolder), PROBE, input_size=32, cache=True, stats=stats2)
    assert not stats1["cached"] and stats2["cached"]
    assert torch.equal(a.vector, b.vector)


def test_cache_tells_label_columns_apart(tmp_path: Path, monkeypatch) -> None:
    # Regression: the key held only the dataset's identity, so the same dataset read with
    # another label column returned the first column's cached embedding.
    import datasets

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray((rng.random((16, 16, 3)) * 255).astype("uint8")) for _ in range(12)]
    ds = datasets.Dataset.from_dict(
        {"image": imgs, "shape": [i % 2 for i in range(12)], "colour": [i % 3 for i in range(12)]},
        features=datasets.Features({"image": datasets.Image(), "shape": datasets.Value("int64"),
                                    "colour": datasets.Value("int64")}),
    )
    stats: dict = {}
    a = embed(ds, PROBE, input_size=32, cache=True, label_column="shape")
    b = embed(ds, PROBE, input_size=32, cache=True, label_column="colour", stats=stats)
    assert not stats["cached"] and a.metadata["label_column"] == "shape" and b.metadata["label_column"] == "colour"
    assert not torch.equal(a.vector, b.vector)


def test_include_norm_adds_norm_scales() -> None:
    e = embed(tensors(), "test_resnet", input_size=32, include_norm=True)
    plain = embed(tensors(), "test_resnet", input_size=32)
    assert e.dim > plain.dim and e.metadata["include_norm"] == "true"
    assert e.metadata["layout_hash"] != plain.metadata["layout_hash"]
    assert torch.isfinite(e.vector).all()


@pytest.mark.parametrize("method", ["montecarlo", "empirical"])
def test_multilabel_tasks_use_a_bernoulli_likelihood(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, 32, 32, generator=g)
    y = (torch.rand(20, 4, generator=g) > 0.5).float()
    e = embed((x, y), PROBE, method, input_size=32)
    assert e.metadata["label_kind"] == "multi" and e.metadata["num_classes"] == "4"
    assert e.config("method_config")["likelihood"] == "bernoulli"
    assert torch.isfinite(e.vector).all() and e.norm > 0


def test_cli_variational_steps_and_one_line_convergence_warning(imagefolder: Path, tmp_path: Path, capsys) -> None:
    common = ["--dataset", str(imagefolder), "--probe", PROBE, "--no-pretrained", "--input-size", "32", "--quiet",
              "--method", "variational"]
    out = tmp_path / "v.safetensors"
    # Adam at 3 steps is still drifting (the Gauss-Newton default settles faster: checked below)
    assert main(["embed", *common, "--fisher-steps", "3", "--variational-optimizer", "adam", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert Task2VecEmbedding.load(out).config("method_config")["steps_done"] == 3
    assert "warning: variational Fisher not converged" in err and "return embed(" not in err
    warm = tmp_path / "w.safetensors"
    assert main(["embed", *common, "--fisher-steps", "3", "--variational-init", "laplace", "--out", str(warm)]) == 0
    cfg = Task2VecEmbedding.load(warm).config("method_config")
    assert cfg["init"].startswith("hessian") and Task2VecEmbedding.load(warm).config("fisher_options")["init"] == "laplace"
    fp = tmp_path / "fp.safetensors"
    assert main(["embed", *common, "--fisher-steps", "3", "--variational-optimizer", "fixed_point", "--out", str(fp)]) == 0
    cfg = Task2VecEmbedding.load(fp).config("method_config")
    assert cfg["optimizer"] == "fixed_point" and cfg["steps_done"] == 3 and cfg["lr"] is None
    assert 0.0 <= cfg["nonpositive_slope_end"] <= 1.0 and cfg["expected_loss_end"] > 0
    gn = tmp_path / "gn.safetensors"
    assert main(["embed", *common, "--out", str(gn)]) == 0  # the default optimiser
    cfg = Task2VecEmbedding.load(gn).config("method_config")
    assert cfg["optimizer"] == "gauss_newton" and cfg["steps"] is None and cfg["epochs"] == 2 and cfg["lr"] is None
    assert cfg["nonpositive_slope_end"] < 0.5 and Task2VecEmbedding.load(gn).vector.abs().sum() > 0
    capsys.readouterr()
    assert main(["embed", *common[:-2], "--fisher-steps", "3", "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--fisher-steps" in capsys.readouterr().err and not (tmp_path / "m.safetensors").exists()
    assert main(["embed", *common[:-2], "--variational-optimizer", "fixed_point",
                 "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "--variational-optimizer applies to --method variational" in capsys.readouterr().err


def test_trivial_for_rebuilds_the_recorded_weights_offline(tmp_path, monkeypatch) -> None:
    # A random-init probe that timm *has* pretrained weights for: t0 must not try to download them.
    import timm

    from t2v_hub.cli.main import main
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.trivial import pretrained_for, trivial_for

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    real = timm.create_model

    def no_download(name, pretrained=False, **kw):
        assert not pretrained, "t0 of a random-init embedding must not fetch pretrained weights"
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", no_download)
    x, y = torch.randn(12, 3, 32, 32), torch.arange(12) % 2
    e = embed(TensorTask(x, y), "resnet10t", seed=0, input_size=32, pretrained=False)
    assert e.metadata["weights"].startswith("random") and pretrained_for(e.metadata) is False
    t0 = trivial_for(e, num_samples=8)
    assert t0.metadata["weights_sha256"] == e.metadata["weights_sha256"]
    path = tmp_path / "e.safetensors"
    e.save(path)
    assert main(["trivial", "--like", str(path), "--out", str(tmp_path / "t0.safetensors"), "--num-samples", "8"]) == 0
    assert Task2VecEmbedding.load(tmp_path / "t0.safetensors").vector.equal(t0.vector)


def test_cli_embed_with_a_local_checkpoint(tmp_path, monkeypatch, capsys) -> None:
    import json

    import timm
    from PIL import Image
    from safetensors.torch import save_file

    from t2v_hub.cli.main import main
    from t2v_hub.embedding import Task2VecEmbedding
    from t2v_hub.probes.weights import file_sha256

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    ckpt = tmp_path / "w.safetensors"
    torch.manual_seed(5)
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(ckpt))
    data = tmp_path / "data"
    for c in ("a", "b"):
        (data / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (90 * (c == "a"), 40 * i, 100)).save(data / c / f"{i}.png")
    out = tmp_path / "e.safetensors"
    assert main(["embed", "--dataset", str(data), "--probe", "test_resnet", "--checkpoint", str(ckpt),
                 "--input-size", "32", "--out", str(out), "--quiet", "--format", "json"]) == 0
    e = Task2VecEmbedding.load(out)
    assert e.metadata["weights"] == "checkpoint" and e.metadata["weights_sha256"] == file_sha256(str(ckpt))
    assert json.loads(capsys.readouterr().out)["probe"] == "test_resnet"
    assert main(["embed", "--dataset", str(data), "--probe", "test_resnet", "--checkpoint", str(tmp_path / "no.pth"),
                 "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


def test_a_saturated_head_is_named_as_the_cause_of_a_zero_fisher() -> None:
    # Features of ~1e5 (random-init InceptionV3 has them): the head is certain of every image,
    # every sampled label's gradient is zero, and the error must say that (not "no weight matters").
    from t2v_hub.errors import FisherError

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32, generator=g) * 1e6, torch.arange(8) % 2
    with pytest.raises(FisherError, match="probability 1.0 .* exactly zero"):
        embed(TensorTask(x, y), "test_efficientnet", pretrained=False, input_size=32)
    assert embed(TensorTask(x / 1e6, y), "test_efficientnet", pretrained=False, input_size=32).norm > 0


def test_embed_takes_the_per_filter_path_and_it_changes_nothing() -> None:
    """embed() forms per-filter sums directly where cheaper (filter_means); the vector is the full diagonal's."""
    from t2v_hub.fisher.conv import conv_spec, filter_sums_cheaper

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 3, 32, 32, generator=g), torch.arange(16) % 4
    fast = embed(TensorTask(x, y), "resnet10t", seed=0, input_size=32, pretrained=False)
    full = embed(TensorTask(x, y), "resnet10t", seed=0, input_size=32, pretrained=False,
                 fisher_options={"filter_means": False})
    assert json.loads(fast.metadata["method_config"])["filter_means"] is True
    assert json.loads(full.metadata["method_config"])["filter_means"] is False
    torch.testing.assert_close(fast.vector, full.vector, rtol=1e-4, atol=1e-6 * float(full.vector.abs().max()))
    # The path is really taken: resnet10t's last stage at 32 px has 1 x 1 outputs and 512 filters.
    import timm

    m = timm.create_model("resnet10t", pretrained=False)
    assert filter_sums_cheaper(conv_spec(m.layer4[0].conv2, "layer4.0.conv2"), 1)
