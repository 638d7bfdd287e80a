"""Data layer: sources, column detection, label checks, decoding, sampling.

Every dataset is made here (tiny PNG/JPEG files, in-memory datasets); nothing
touches the network. Images are a few pixels and the transform crops to 16x16
so that the whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import io
import json
import os
import time

import datasets
import numpy as np
import pyarrow as pa
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, IterableDataset, Sequence, Value
from PIL import Image as PILImage

from t2v_hub.data import STREAM_SHUFFLE_BUFFER, Preprocessor, TaskData, balanced_indices, load_task
from t2v_hub.data import images as images_mod
from t2v_hub.errors import BadImageError, DataError, DatasetNotFoundError, ImageTooLargeError

CFG = {
    "input_size": (3, 16, 16),
    "interpolation": "bilinear",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "crop_pct": 0.875,
    "crop_mode": "center",
}
FEATS = Features({"image": Image(), "label": ClassLabel(names=["cat", "dog"])})


@pytest.fixture(autouse=True)
def _isolated_datasets_cache(tmp_path_factory, monkeypatch):
    # load_dataset("parquet"/"csv") writes Arrow copies: keep them out of ~/.cache.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf_cache")))


def img_bytes(mode: str = "RGB", size: tuple[int, int] = (12, 10), color=None, fmt: str = "PNG") -> bytes:
    if color is None:
        color = {"L": 128, "1": 1, "I;16": 30000, "I": 30000, "F": 0.5, "CMYK": (0, 255, 0, 0)}.get(
            mode, (200, 30, 30)
        )
        if mode in ("LA",):
            color = (128, 255)
        if mode == "RGBA":
            color = (200, 30, 30, 255)
    buf = io.BytesIO()
    PILImage.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def mem_dataset(labels: list[int], features: Features = FEATS, sizes=None) -> Dataset:
    imgs = [
        {"bytes": img_bytes(size=(sizes[i] if sizes else (12, 10)), color=(i * 7 % 256, 0, 0)), "path": None}
        for i in range(len(labels))
    ]
    return Dataset.from_dict({"image": imgs, "label": labels}, features=features)


def make_imagefolder(root, classes=("cat", "dog"), per_class: int = 3) -> str:
    for c in classes:
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            (root / c / f"{i}.png").write_bytes(img_bytes(size=(10 + i, 12), color=(i * 40, 80, 0)))
    return str(root)


# ---------------------------------------------------------------- sources


def test_imagefolder_labels_tensors_and_fingerprint(tmp_path):
    root = make_imagefolder(tmp_path / "pets", classes=("zebra", "ant"))
    (tmp_path / "pets" / "zebra" / "notes.txt").write_text("not an image")
    td = load_task(root)
    assert td.class_names == ["ant", "zebra"] and td.num_classes == 2 and td.label_kind == "single"
    assert td.labels.tolist() == [0, 0, 0, 1, 1, 1]
    m = td.metadata
    assert m["dataset_id"] == "local:" + os.path.basename(root) and m["split"] == "train" and m["image_column"] == "image"
    assert json.loads(str(m["label_names"])) == ["ant", "zebra"] and m["num_samples"] == 6
    assert all(isinstance(v, (str, int)) for v in m.values())
    x, y = td.tensors(CFG, progress=False)
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32 and torch.equal(y, td.labels)
    # Fingerprint follows the files: touching one changes it.
    p = tmp_path / "pets" / "ant" / "0.png"
    os.utime(p, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert load_task(root).metadata["fingerprint"] != m["fingerprint"]


def test_imagefolder_with_split_folders(tmp_path):
    make_imagefolder(tmp_path / "d" / "train")
    make_imagefolder(tmp_path / "d" / "test", per_class=2)
    assert load_task(tmp_path / "d").num_samples == 6
    assert load_task(tmp_path / "d", split="test").num_samples == 4
    with pytest.raises(DataError, match="split 'validation' not found.*available splits: test, train"):
        load_task(tmp_path / "d", split="validation")


def test_save_to_disk_dataset_and_datasetdict(tmp_path):
    mem_dataset([0, 1, 0, 1]).save_to_disk(str(tmp_path / "one"))
    assert load_task(tmp_path / "one").num_samples == 4
    DatasetDict({"test": mem_dataset([0, 1]), "train": mem_dataset([0, 1, 1])}).save_to_disk(
        str(tmp_path / "dd")
    )
    td = load_task(str(tmp_path / "dd"))
    assert td.metadata["split"] == "train" and td.num_samples == 3
    assert load_task(str(tmp_path / "dd"), split="test").num_samples == 2
    arrow = next((tmp_path / "one").glob("*.arrow"))  # a bare Arrow file loads too
    assert load_task(str(arrow)).labels.tolist() == [0, 1, 0, 1]
    with pytest.raises(DataError, match="available splits: test, train"):
        load_task(str(tmp_path / "dd"), split="validation")


def test_parquet_file_keeps_feature_types(tmp_path):
    mem_dataset([1, 0, 1, 0, 1]).to_parquet(str(tmp_path / "d.parquet"))
    td = load_task(str(tmp_path / "d.parquet"))
    assert td.class_names == ["cat", "dog"] and td.labels.tolist() == [1, 0, 1, 0, 1]
    assert td.tensors(CFG, progress=False)[0].shape == (5, 3, 16, 16)
    # (No max_samples here: datasets sleeps 5 s after a parquet stream is cut short;
    # stopping early is covered by test_streaming_reads_only_what_is_used.)
    streamed = load_task(str(tmp_path / "d.parquet"), streaming=True)
    assert streamed.labels.tolist() == td.labels.tolist()
    assert torch.equal(streamed.tensors(CFG, progress=False)[0], td.tensors(CFG, progress=False)[0])


def test_csv_with_relative_image_paths_and_string_labels(tmp_path):
    (tmp_path / "imgs").mkdir()
    rows = []
    for i, lab in enumerate(["tulip", "rose", "tulip", "daisy"]):
        (tmp_path / "imgs" / f"{i}.jpg").write_bytes(img_bytes(fmt="JPEG", size=(9 + i, 11)))
        rows.append(f"imgs/{i}.jpg,{lab}")
    (tmp_path / "t.csv").write_text("file,species\n" + "\n".join(rows) + "\n")
    td = load_task(str(tmp_path / "t.csv"))
    assert td.metadata["image_column"] == "file" and td.metadata["label_column"] == "species"
    assert td.class_names == ["daisy", "rose", "tulip"] and td.labels.tolist() == [2, 1, 2, 0]
    assert td.tensors(CFG, progress=False)[0].shape == (4, 3, 16, 16)


def test_in_memory_dataset_iterabledataset_and_datasetdict():
    ds = mem_dataset([0, 1, 1, 0])
    assert load_task(ds).metadata["fingerprint"] == ds._fingerprint
    assert load_task(DatasetDict({"only": ds})).metadata["split"] == "only"
    it = load_task(ds.to_iterable_dataset())
    assert it.labels.tolist() == [0, 1, 1, 0] and len(str(it.metadata["fingerprint"])) == 32
    x1, _ = load_task(ds).tensors(CFG, progress=False)
    x2, _ = it.tensors(CFG, progress=False)
    assert torch.equal(x1, x2)


def test_datasetdict_without_train_and_several_splits():
    with pytest.raises(DataError, match="no 'train' split.*a, b; pass split="):
        load_task(DatasetDict({"a": mem_dataset([0, 1]), "b": mem_dataset([0, 1])}))


def test_streaming_reads_only_what_is_used():
    png = [img_bytes(color=(c, 0, 0)) for c in range(4)]
    read = [0]

    def gen():
        for i in range(3000):
            read[0] += 1
            yield {"image": {"bytes": png[i % 4], "path": None}, "label": i % 2, "idx": i}

    feats = Features({"image": Image(), "label": ClassLabel(names=["a", "b"]), "idx": Value("int64")})
    ids = IterableDataset.from_generator(gen, features=feats)
    td = load_task(ids, max_samples=10, seed=3)
    assert td.num_samples == 10 and read[0] <= 10 + STREAM_SHUFFLE_BUFFER + 10
    again = load_task(ids, max_samples=10, seed=3)
    assert again.metadata["fingerprint"] == td.metadata["fingerprint"]
    assert load_task(ids, max_samples=10, seed=4).metadata["fingerprint"] != td.metadata["fingerprint"]


# ---------------------------------------------------------------- columns & labels


def test_column_detection_by_type_and_overrides():
    imgs = [{"bytes": img_bytes(), "path": None}] * 4
    feats = Features(
        {"photo": Image(), "thumb": Image(), "coarse": ClassLabel(names=["x", "y"]), "n": Value("int64")}
    )
    ds = Dataset.from_dict(
        {"photo": imgs, "thumb": imgs, "coarse": [0, 1, 0, 1], "n": [10, 3, 10, 7]}, features=feats
    )
    with pytest.raises(DataError, match="several image columns: photo, thumb; pass image_column="):
        load_task(ds)
    td = load_task(ds, image_column="thumb")
    assert td.metadata["image_column"] == "thumb" and td.metadata["label_column"] == "coarse"
    by_int = load_task(ds, image_column="photo", label_column="n")
    assert by_int.class_names == ["3", "7", "10"] and by_int.labels.tolist() == [2, 0, 2, 1]
    with pytest.raises(DataError, match="label_column 'nope' not found; columns: photo \\(Image\\)"):
        load_task(ds, image_column="photo", label_column="nope")
    two = ds.cast_column("n", ClassLabel(names=[str(i) for i in range(11)]))
    with pytest.raises(DataError, match="several ClassLabel columns: coarse, n"):
        load_task(two, image_column="photo")


def test_plain_integer_labels_are_mapped_to_contiguous_ids():
    feats = Features({"image": Image(), "label": Value("int64")})
    td = load_task(mem_dataset([5, 9, 5, 2], features=feats))
    assert td.class_names == ["2", "5", "9"] and td.labels.tolist() == [1, 2, 1, 0]


def test_multilabel_sequence_of_classlabel():
    feats = Features({"image": Image(), "tags": Sequence(ClassLabel(names=["a", "b", "c"]))})
    imgs = [{"bytes": img_bytes(), "path": None}] * 3
    ds = Dataset.from_dict({"image": imgs, "tags": [[0, 2], [1], []]}, features=feats)
    td = load_task(ds)
    assert td.label_kind == "multi" and td.metadata["label_kind"] == "multi"
    assert td.labels.dtype == torch.float32
    assert td.labels.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    assert td.tensors(CFG, progress=False)[1].shape == (3, 3)


def test_float_labels_are_regression_targets():
    td = load_task(mem_dataset([0.5, 1.5], features=Features({"image": Image(), "label": Value("float32")})))
    assert td.label_kind == "regression" and td.labels.tolist() == [[-1.0], [1.0]]
    feats = Features({"image": Image(), "score": Value("float32")})
    with pytest.raises(DataError, match="'score' is constant.*carries no task"):
        load_task(
            Dataset.from_dict({"image": [img_bytes()] * 2, "score": [0.1, 0.1]}, features=feats),
            label_column="score",
        )


def test_no_image_column():
    ds = Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    with pytest.raises(
        DataError, match="no image column.*text \\(string\\), label \\(int64\\).*image_column="
    ):
        load_task(ds)


def test_no_label_column():
    ds = Dataset.from_dict({"image": [img_bytes()] * 2}, features=Features({"image": Image()}))
    with pytest.raises(DataError, match="no label column.*columns: image \\(Image\\); pass label_column="):
        load_task(ds)


@pytest.mark.parametrize(("source", "hint"), [("user/my data", ""), ("user/", ""), ("a--b/c", ""),
                                            ("user/my_data:train", "a split goes in split=")])
def test_impossible_hub_ids_are_refused_before_any_network_call(monkeypatch, source, hint):
    from t2v_hub.data import sources

    def no_network(*a, **k):
        raise AssertionError("the network was asked about an id that cannot exist")

    monkeypatch.setattr(sources, "_check_reachable", no_network)
    monkeypatch.setattr(sources.datasets, "get_dataset_split_names", no_network)
    with pytest.raises(DatasetNotFoundError, match="neither a local path nor a valid Hub dataset id") as info:
        load_task(source)
    assert hint in str(info.value)


def _string_labels(labels):
    feats = Features({"image": Image(), "label": Value("string")})
    return mem_dataset(labels, features=feats)


def test_labels_that_differ_only_in_case_or_spaces_are_flagged():
    with pytest.warns(UserWarning, match=r"' cat' / 'cat'; 'Dog' / 'dog' differ only in case or surrounding spaces"):
        task = load_task(_string_labels(["cat", " cat", "dog", "Dog", "cat", "dog"]))
    assert task.num_classes == 4  # kept apart: the data says so; the warning says what to check
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert load_task(_string_labels(["cat", "dog", "cat", "dog"])).num_classes == 2


def test_http_images_without_the_http_extras_name_the_fix(monkeypatch):
    import datasets.utils.file_utils as fu

    def no_http(*_a, **_k):
        raise ImportError('HTTPFileSystem requires "requests" and "aiohttp" to be installed')

    monkeypatch.setattr(fu, "xopen", no_http)
    with pytest.raises(BadImageError, match=r"https://example.com/a.png: reading images over http\(s\) needs "
                                            r"`pip install aiohttp requests`"):
        images_mod.read_bytes("https://example.com/a.png")


def test_class_folders_one_level_down_are_named(tmp_path):
    from conftest import write_imagefolder

    (tmp_path / "data" / "v2" / "images").mkdir(parents=True)
    write_imagefolder(tmp_path / "data" / "v2" / "images", ["cat", "dog"], 2, (8, 8))
    deeper = str(tmp_path / "data" / "v2" / "images")
    with pytest.raises(DataError, match=f"1 class \\(v2\\).*class folders look like they are in {deeper}: pass"):
        load_task(str(tmp_path / "data"))
    assert load_task(deeper).num_classes == 2  # and the folder it names is the task
    # Two sibling "classes" that are really two trees: no guess, just the plain error.
    (tmp_path / "solo" / "only").mkdir(parents=True)
    write_imagefolder(tmp_path / "solo" / "only", ["x"], 2, (8, 8))
    with pytest.raises(DataError, match="at least two classes$"):
        load_task(str(tmp_path / "solo"))


def test_one_class_is_refused():
    with pytest.raises(DataError, match="1 class \\(cat\\).*at least two classes"):
        load_task(
            mem_dataset([0, 0, 0], features=Features({"image": Image(), "label": ClassLabel(names=["cat"])}))
        )
    with pytest.raises(DataError, match="only one class is present in the selected samples"):
        load_task(mem_dataset([1, 1, 1]))


def test_class_id_outside_classlabel_range_names_the_row():
    # A table already in the features' schema skips datasets' (validating) cast,
    # as a parquet file written by another tool would.
    table = pa.table(
        {"image": [{"bytes": img_bytes(), "path": None}] * 3, "label": [0, 1, 5]}, schema=FEATS.arrow_schema
    )
    ds = Dataset(table, info=datasets.DatasetInfo(features=FEATS))
    with pytest.raises(DataError, match="row 2: label 5 is outside the ClassLabel range 0..1"):
        load_task(ds)
    with pytest.raises(DataError, match="row 1: label -1 means 'no label'"):
        load_task(mem_dataset([0, -1, 1]))


def test_none_label_names_the_row():
    with pytest.raises(DataError, match="row 2: label None is missing"):
        load_task(mem_dataset([0, 1, None]))


def test_empty_dataset_and_empty_after_filtering():
    with pytest.raises(DataError, match="has no rows"):
        load_task(Dataset.from_dict({"image": [], "label": []}, features=FEATS))
    with pytest.raises(DataError, match="has no rows"):
        load_task(mem_dataset([0, 1, 0]).filter(lambda r: False))


def test_max_samples_zero_negative_and_below_class_count():
    ds = mem_dataset([0, 1] * 5)
    for bad in (0, -3):
        with pytest.raises(DataError, match=rf"max_samples={bad}: expected a whole number of at least 1 \(or None\)"):
            load_task(ds, max_samples=bad)
    three = mem_dataset(
        [0, 1, 2] * 3, features=Features({"image": Image(), "label": ClassLabel(names=list("abc"))})
    )
    with pytest.raises(DataError, match="max_samples=2 is smaller than the 3 classes present"):
        load_task(three, max_samples=2)


def test_shuffle_before_truncate_is_seeded():
    ds = mem_dataset([0, 1] * 20)
    a = load_task(ds, max_samples=10, seed=0)
    assert a.num_samples == 10 and a.rows != list(range(10))
    assert load_task(ds, max_samples=10, seed=0).rows == a.rows
    assert load_task(ds, max_samples=10, seed=1).rows != a.rows
    assert a.labels.tolist() == [r % 2 for r in a.rows]


def test_bad_arguments():
    with pytest.raises(DataError, match="on_bad_image must be 'fail' or 'skip'"):
        load_task(mem_dataset([0, 1]), on_bad_image="ignore")
    with pytest.raises(DataError, match="unsupported source of type int"):
        load_task(42)


# ---------------------------------------------------------------- not found


def test_missing_local_path(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="no such file or folder"):
        load_task(str(tmp_path / "nothing-here"))
    with pytest.raises(DatasetNotFoundError):
        load_task("./not/a/dataset")


def test_hub_id_offline_is_not_found(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        DatasetNotFoundError, match="'someone/no-such-dataset-xyz' not found on the Hub.*HF_HUB_OFFLINE"
    ):
        load_task("someone/no-such-dataset-xyz")


# ---------------------------------------------------------------- decoding


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "CMYK", "I;16", "1", "I", "F"])
def test_every_mode_gives_three_channels(mode):
    fmt = {"CMYK": "JPEG", "F": "TIFF", "I": "TIFF"}.get(mode, "PNG")
    pre = Preprocessor(CFG)
    out = pre(img_bytes(mode, (13, 9), fmt=fmt))
    assert out.shape == (3, 16, 16) and out.dtype == torch.uint8


def test_mode_conversion_values():
    pre = Preprocessor(CFG)
    clear = pre(img_bytes("RGBA", color=(0, 0, 0, 0)))  # transparent black -> white
    assert int(clear.min()) == 255
    wide = pre(img_bytes("I;16", color=65535))
    assert int(wide.min()) == 255
    mid = pre(img_bytes("I;16", color=32896))  # 32896 / 257 = 128
    assert int(mid.float().mean().round()) == 128
    pal = PILImage.new("P", (8, 8), 0)
    pal.putpalette([10, 20, 30] + [0] * 765)
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    assert pre(buf.getvalue())[:, 0, 0].tolist() == [10, 20, 30]


def test_matches_timm_eval_transform():
    from timm.data import create_transform

    raw = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(raw).save(buf, "PNG")
    ds = Dataset.from_dict({"image": [buf.getvalue(), buf.getvalue()], "label": [0, 1]}, features=FEATS)
    x, _ = load_task(ds).tensors(CFG, progress=False)
    ref = create_transform(**CFG, is_training=False)(PILImage.fromarray(raw))
    assert torch.equal(x[0], ref)


def test_timm_data_config_of_a_real_probe():
    import timm

    cfg = timm.data.resolve_model_data_config(timm.create_model("test_efficientnet", pretrained=False))
    x, _ = load_task(mem_dataset([0, 1])).tensors(cfg, progress=False)
    assert x.shape == (2, *cfg["input_size"])


def test_one_pixel_image_and_mixed_sizes_and_modes():
    imgs = [
        img_bytes("RGB", (1, 1)),
        img_bytes("L", (40, 7)),
        img_bytes("RGBA", (5, 90)),
        img_bytes("P", (16, 16)),
    ]
    ds = Dataset.from_dict({"image": imgs, "label": [0, 1, 0, 1]}, features=FEATS)
    x, _ = load_task(ds).tensors(CFG, progress=False)
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all()


def test_pixel_bound_draft_and_decompression_bomb(monkeypatch):
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 10_000)
    big_png = img_bytes("RGB", (200, 200))
    with pytest.raises(
        ImageTooLargeError, match="row 1.*200x200 = 40000 pixels, above the 10000-pixel bound"
    ):
        load_task(
            Dataset.from_dict({"image": [img_bytes(), big_png], "label": [0, 1]}, features=FEATS)
        ).tensors(CFG, progress=False)
    # One bound for every format, on the header's size: a JPEG over it is refused too (drafting
    # would still decode 1/64 of it), one under it is drafted.
    with pytest.raises(ImageTooLargeError, match="400x400 = 160000 pixels"):
        Preprocessor(CFG)(img_bytes("RGB", (400, 400), fmt="JPEG"))
    assert Preprocessor(CFG)(img_bytes("RGB", (90, 90), fmt="JPEG")).shape == (3, 16, 16)
    # PIL's own bomb check surfaces as our error, not a raw DecompressionBombError.
    monkeypatch.setattr(images_mod, "MAX_PIXELS", 2**28)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLargeError, match="decompression-bomb"):
        Preprocessor(CFG)(img_bytes("RGB", (100, 100)))


def test_real_large_jpeg_is_drafted():
    data = img_bytes("L", (6000, 6000), color=20, fmt="JPEG")
    t = time.perf_counter()
    out = Preprocessor(CFG)(data)
    assert out.shape == (3, 16, 16) and int(out[0, 0, 0]) in range(15, 26)
    assert time.perf_counter() - t < 5.0


def test_corrupt_image_fail_and_skip(tmp_path):
    root = make_imagefolder(tmp_path / "d", per_class=3)
    (tmp_path / "d" / "cat" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(BadImageError, match="image of row 1 cannot be used: .*on_bad_image='skip'"):
        load_task(root).tensors(CFG, progress=False)
    td = load_task(root, on_bad_image="skip")
    with pytest.warns(RuntimeWarning, match=r"skipped 1 of 6 images that cannot be used \(row 1: .*1\.png"):
        x, y = td.tensors(CFG, progress=False)
    assert x.shape[0] == 5 and y.tolist() == [0, 0, 1, 1, 1]
    assert (
        td.metadata["num_bad_images"] == 1 and td.metadata["num_samples"] == 5 and td.rows == [0, 2, 3, 4, 5]
    )
    # Decoding in a worker process gives the same tensors.
    with pytest.warns(RuntimeWarning, match="skipped 1 of 6"):
        x1, _ = load_task(root, on_bad_image="skip").tensors(CFG, num_workers=1, progress=False)
    assert torch.equal(x, x1)


def test_missing_image_file_and_all_bad(tmp_path):
    ds = Dataset.from_dict({"image": [str(tmp_path / "gone.png"), b"junk"], "label": [0, 1]}, features=FEATS)
    with pytest.raises(BadImageError, match="row 0 .*cannot read .*gone.png"):
        load_task(ds).tensors(CFG, progress=False)
    with pytest.raises(DataError, match="all 2 images failed to decode"):
        load_task(ds, on_bad_image="skip").tensors(CFG, progress=False)


def test_loader_batches_and_cache_reuse():
    td = load_task(mem_dataset([0, 1] * 5))
    x, y = td.tensors(CFG, progress=False)
    batches = list(td.loader(CFG, 4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b[0] for b in batches]), x) and torch.equal(
        torch.cat([b[1] for b in batches]), y
    )
    s1 = torch.cat([b[1] for b in td.loader(CFG, 4, shuffle=True)])
    s2 = torch.cat([b[1] for b in td.loader(CFG, 4, shuffle=True)])
    assert torch.equal(s1, s2) and sorted(s1.tolist()) == sorted(y.tolist())
    small = dict(CFG, input_size=(3, 8, 8))
    assert td.tensors(small, progress=False)[0].shape == (10, 3, 8, 8)
    assert isinstance(td, TaskData) and len(td) == 10


# ---------------------------------------------------------------- sampling


def test_balanced_indices_deterministic_and_uniform_over_classes():
    labels = torch.tensor([0] * 90 + [1] * 10 + [2] * 5)
    a = balanced_indices(labels, 30_000, torch.Generator().manual_seed(7))
    b = balanced_indices(labels, 30_000, torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and a.shape == (30_000,) and a.dtype == torch.int64
    counts = torch.bincount(labels[a], minlength=3).double()
    chi2 = float(((counts - 10_000) ** 2 / 10_000).sum())
    assert chi2 < 20.0  # df = 2: p < 5e-5 if the draws were not uniform over classes
    within = torch.bincount(a[labels[a] == 2] - 100, minlength=5).double()
    assert float(((within - within.mean()) ** 2 / within.mean()).sum()) < 25.0
    assert not torch.equal(a, balanced_indices(labels, 30_000, torch.Generator().manual_seed(8)))


def test_balanced_indices_multilabel_and_edges():
    multi = torch.zeros(6, 3)
    idx = balanced_indices(multi, 600, torch.Generator().manual_seed(0))
    assert idx.min() >= 0 and idx.max() < 6 and len(set(idx.tolist())) == 6
    assert balanced_indices(torch.tensor([3, 3, 8]), 0).numel() == 0
    with pytest.raises(DataError, match="empty label set"):
        balanced_indices(torch.tensor([], dtype=torch.int64), 10)


def test_list_of_int_or_str_columns_are_multilabel_without_label_column() -> None:
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage
    from datasets import List as HFList

    for inner, values in (("int64", [[0, 2], [1], [2, 0], [1, 2]]), ("string", [["cat"], ["dog", "cat"], ["dog"], ["cat"]])):
        feats = Features({"image": HFImage(), "tags": HFList(Value(inner))})
        ds = Dataset.from_dict({"image": [img_bytes() for _ in range(4)], "tags": values}, features=feats)
        td = load_task(ds)
        assert td.label_kind == "multi" and td.labels.shape[0] == 4 and td.labels.dim() == 2


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("latin.csv", b"image,label\ncaf\xe9.png,1\n", "is not UTF-8 text"),
    ("noise.csv", bytes(range(128, 256)), "is not UTF-8 text"),
    ("header.csv", b"image,label\n", "holds no rows"),
    ("empty.csv", b"", "holds no rows"),
    ("cut.json", b'{"image": ["a.png", ', "not valid JSON"),
    ("bad.jsonl", b'{"image": "a.png", "label": 1}\n{oops\n', "not valid JSON"),
    ("noise.parquet", b"PAR1" + bytes(200), "check that the file is complete"),
])
def test_a_damaged_data_file_says_what_is_wrong(tmp_path, name: str, content: bytes, expected: str) -> None:
    """datasets reports all of these as "DatasetGenerationError: An error occurred while generating the
    dataset"; the message names the file's actual problem and the fix."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as exc:
        load_task(str(path))
    assert "An error occurred while generating" not in str(exc.value) and str(path) in str(exc.value)


def test_folders_that_are_no_class_tree_say_how_to_lay_them_out(tmp_path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(3):
        PILImage.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(loose / f"{i}.png")
    with pytest.raises(DataError, match=r"are not in class folders, so they have no labels; put each class's images"):
        load_task(str(loose))
    text = tmp_path / "text"
    for c in ("a", "b"):
        (text / c).mkdir(parents=True)
        (text / c / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"holds text files, not images"):
        load_task(str(text))
