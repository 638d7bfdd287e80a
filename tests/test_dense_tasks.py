"""Pixel-wise tasks (supplement 1.1): masks and float maps from a dataset column, end to end.

The Fisher through backbone + decoder is checked against a naive per-sample autograd
loop over the decoder the pipeline fits; the data layer's geometry against the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, List, Value
from datasets import Image as DImage
from PIL import Image

from t2v_hub import embed
from t2v_hub.config import HeadConfig
from t2v_hub.data import load_task
from t2v_hub.errors import DataError, FisherError
from t2v_hub.head import fit_dense_head
from t2v_hub.probes import create_probe
from t2v_hub.probes.decoder import DenseModel, PixelDecoder, feature_map, make_decoder, upsample_sizes
from t2v_hub.probes.memory_format import prefer_channels_last

CFG = {"input_size": (3, 32, 32), "crop_pct": 0.875, "interpolation": "bicubic"}
FAST = HeadConfig(epochs=1, dense_draws_per_epoch=16, batch_size=8)
PROBE = "test_efficientnet"


def _half_images(n: int, shape: tuple[int, int] = (40, 30), seed: int = 0):
    """Images bright on a random vertical band; the mask marks exactly that band (0/255)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    images, masks, depths = [], [], []
    for _ in range(n):
        a = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        lo = int(rng.integers(0, w // 2))
        hi = int(rng.integers(lo + 4, w))
        a[:, lo:hi] += 180
        m = np.zeros((h, w), np.uint8)
        m[:, lo:hi] = 255
        images.append(Image.fromarray(a))
        masks.append(Image.fromarray(m))
        depths.append(Image.fromarray((np.linspace(0, 1, w)[None, :] * np.ones((h, 1)) + (m > 0)).astype(np.float32),
                                      "F"))
    return images, masks, depths


def _dataset(n: int = 8, mask_shape: tuple[int, int] | None = None) -> Dataset:
    images, masks, depths = _half_images(n)
    if mask_shape is not None:
        masks[3] = masks[3].resize(mask_shape[::-1])
    arrays = [(np.asarray(m) > 0).astype(int).tolist() for m in masks]
    return Dataset.from_dict(
        {"image": images, "mask": masks, "depth": depths, "classes": arrays},
        features=Features({"image": DImage(), "mask": DImage(), "depth": DImage(),
                           "classes": List(List(Value("int64")))}),
    )


def test_mask_column_becomes_a_segmentation_task_aligned_with_the_image() -> None:
    task = load_task(_dataset(), label_column="mask", image_column="image")
    assert task.label_kind == "segmentation"
    rows = task.image_rows(CFG, progress=False)
    assert task.labels.shape == (8, 32, 32) and task.labels.dtype == torch.int64
    assert task.class_names == ["0", "255"] and task.num_classes == 2  # 0/255 masks: two classes
    assert json.loads(task.metadata["target_size"]) == [32, 32]
    # Geometry: the mask went through the image's own resize and crop.
    bright = rows.materialize().mean(1) > 0  # normalised: the band is well above the mean
    agree = float((bright == task.labels.bool()).float().mean())
    flipped = float((bright == task.labels.flip(-1).bool()).float().mean())
    assert agree > 0.97 and flipped < agree - 0.2, (agree, flipped)


def test_array_and_float_columns() -> None:
    ds = _dataset()
    arr = load_task(ds, label_column="classes", image_column="image")
    arr.image_rows(CFG, progress=False)
    img = load_task(ds, label_column="mask", image_column="image")
    img.image_rows(CFG, progress=False)
    assert arr.label_kind == "segmentation" and torch.equal(arr.labels, img.labels)
    depth = load_task(ds, label_column="depth", image_column="image")
    assert depth.label_kind == "dense_regression"
    depth.image_rows(CFG, progress=False)
    assert depth.labels.shape == (8, 1, 32, 32)
    assert abs(float(depth.labels.mean())) < 1e-5 and abs(float(depth.labels.std(correction=0)) - 1) < 1e-4
    assert depth.metadata["target_dim"] == 1 and len(json.loads(depth.metadata["target_std"])) == 1


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: _dataset(mask_shape=(30, 28)), r"row 3: dense target 'mask' is 28x30 but its image is 30x40"),
        (lambda: _dataset().cast_column("mask", DImage()).map(lambda r: {"mask": r["mask"].convert("RGB")},
                                                               features=None), "colour-coded"),
        (lambda: _dataset().map(lambda r: {"mask": Image.new("L", (30, 40), 7)}), "at least two classes"),
    ],
    ids=["size-mismatch", "rgb-mask", "one-class"],
)
def test_bad_masks_are_refused_naming_the_problem(make, match: str) -> None:
    with pytest.raises(DataError, match=match):
        task = load_task(make(), label_column="mask", image_column="image")
        task.image_rows(CFG, progress=False)


def test_mask_column_is_never_guessed() -> None:
    with pytest.raises(DataError, match="label_column="):
        load_task(_dataset().remove_columns(["depth", "classes"]), image_column="image")


def test_upsample_sizes_reach_the_target_by_equal_factors() -> None:
    assert upsample_sizes((1, 1), (27, 27)) == [(3, 3), (9, 9), (27, 27)]
    assert upsample_sizes((4, 2), (32, 16))[-1] == (32, 16)


def _naive_fisher(model, params: dict, xs: torch.Tensor, ys: torch.Tensor, regression: bool) -> dict:
    """Mean over samples of the squared gradient of the sample's summed pixel NLL: one backward each."""
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(True)  # the probe's weights are frozen; the reference needs their gradients
    for x, y in zip(xs, ys, strict=True):
        out = model(x[None])
        nll = 0.5 * (out - y[None]).square().sum() if regression else F.cross_entropy(out, y[None], reduction="sum")
        grads = torch.autograd.grad(nll, list(params.values()))
        for (n, _), g in zip(params.items(), grads, strict=True):
            sums[n] += g.double().square()
    return {n: s / len(xs) for n, s in sums.items()}


@pytest.mark.parametrize("column", ["mask", "depth"])
def test_embedding_equals_a_naive_per_sample_loop_through_the_decoder(column: str) -> None:
    ds = _dataset(6)
    emb = embed(ds, PROBE, "empirical", label_column=column, image_column="image", input_size=32,
                pretrained=False, head=FAST, seed=3)
    regression = column == "depth"
    assert emb.metadata["label_kind"] == ("dense_regression" if regression else "segmentation")
    assert emb.metadata["dense_head"].startswith("supplement-1.1")
    # The reference: the same probe and data, the decoder fit by the same public steps and seeds.
    probe = create_probe(PROBE, 2, input_size=32, pretrained=False)
    task = load_task(ds, label_column=column, image_column="image")
    x = task.image_rows(probe.data_config, progress=False).materialize()
    # The pipeline's CPU layout too: the decoder is fitted by SGD, which carries the features'
    # last-bit rounding into a different fit (1% apart in the embedding for masks).
    assert prefer_channels_last(probe.model, x[:1]) == emb.metadata["memory_format"]
    with torch.no_grad():
        feats = feature_map(probe.model, x)
    out = 1 if regression else 2
    decoder = make_decoder(feats.shape[1], out, tuple(feats.shape[-2:]), (32, 32), seed=3)
    fit_dense_head(decoder, feats, task.labels, FAST, torch.Generator().manual_seed(3), regression=regression)
    model = DenseModel(probe.model, decoder).eval()
    names = probe.measured_params()
    params = dict(model.named_parameters())
    ref = _naive_fisher(model, {n: params[f"backbone.{n}"] for n in names}, x, task.labels, regression)
    want = probe.layout.reduce({n: v.float() for n, v in ref.items()})
    assert float(want.norm()) > 0
    err = float((emb.vector - want).norm() / want.norm())
    assert err < 1e-4, err


def test_montecarlo_default_and_refusals() -> None:
    ds = _dataset(6)
    emb = embed(ds, PROBE, label_column="mask", image_column="image", input_size=32, pretrained=False, head=FAST)
    assert emb.method == "montecarlo" and torch.isfinite(emb.vector).all() and float(emb.vector.norm()) > 0
    assert int(emb.metadata["num_classes"]) == 2 and "head_train_pixel_accuracy" in emb.metadata
    with pytest.raises(FisherError, match="dense tasks .* method='montecarlo' or 'empirical'"):
        embed(ds, PROBE, "variational", label_column="mask", image_column="image", input_size=32, pretrained=False)


def test_decoder_is_the_supplements() -> None:
    d = PixelDecoder(64, 3, [(2, 2), (4, 4), (8, 8)])
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (64, 256, (3, 3)), (256, 256, (3, 3)), (256, 128, (3, 3)), (128, 32, (3, 3)), (32, 3, (1, 1))]
    assert d(torch.randn(2, 64, 1, 1)).shape == (2, 3, 8, 8)


def test_cli_embeds_a_mask_column(tmp_path: Path, capsys) -> None:
    from t2v_hub.cli.main import main

    root = tmp_path / "data"
    _dataset(6).save_to_disk(str(root))
    out = tmp_path / "e.safetensors"
    argv = ["embed", "--dataset", str(root), "--image-column", "image", "--label-column", "mask", "--probe", PROBE,
            "--no-pretrained", "--input-size", "32", "--head-draws", "8", "--no-cache", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert "classes per pixel" in capsys.readouterr().out
    bad = tmp_path / "bad"
    _dataset(6, mask_shape=(10, 10)).save_to_disk(str(bad))
    argv[2], argv[-1] = str(bad), str(tmp_path / "f.safetensors")
    capsys.readouterr()  # save_to_disk's progress
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "but its image is" in err[0] and not (tmp_path / "f.safetensors").exists()


def test_streamed_mask_column_gives_the_same_targets() -> None:
    ds = _dataset()
    table = load_task(ds, label_column="mask", image_column="image")
    table.image_rows(CFG, progress=False)
    stream = load_task(ds.to_iterable_dataset(), label_column="mask", image_column="image")
    stream.image_rows(CFG, progress=False)
    assert stream.label_kind == "segmentation" and torch.equal(stream.labels, table.labels)


def test_a_mask_claiming_a_huge_size_is_refused_before_decoding(monkeypatch) -> None:
    # The image path's pixel bound applies to masks too, checked on the header.
    import t2v_hub.data.images as images

    monkeypatch.setattr(images, "MAX_PIXELS", 2000)  # the images (30x40) fit, a 60x80 mask does not
    ds = _dataset(4).map(lambda r: {"mask": Image.new("L", (60, 80), 0)})
    with pytest.raises(DataError, match="pixel bound"):
        load_task(ds, label_column="mask", image_column="image")
