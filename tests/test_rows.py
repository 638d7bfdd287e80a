"""Images normalised batch by batch (data/rows.py), and the file-backed decode cache.

The reference is the old behaviour: one float tensor of the whole task (``TaskData.tensors``).
Every view, sub-view and batch must give the same bytes, and an embedding made through the
file-backed cache must equal one made in RAM, with nothing left on disk afterwards.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_imagefolder

from t2v_hub.data.rows import ImageRows, as_rows, take_rows, uint8_cache
from t2v_hub.data.task import load_task
from t2v_hub.data.tensors import TensorBatches
from t2v_hub.task2vec import embed

# The fixture's broken image is there on purpose (skip mode keeps the rows aligned); its warning is tested
# in test_data.py.
pytestmark = pytest.mark.filterwarnings("ignore:skipped 1 of 22 images:RuntimeWarning")

CFG = {"input_size": (3, 16, 16), "interpolation": "bilinear", "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3),
       "crop_pct": 1.0, "crop_mode": "center"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = write_imagefolder(tmp_path_factory.mktemp("rows"), ["a", "b", "c"], 7, (20, 24))
    (root / "a" / "broken.png").write_bytes(b"not a png")
    return root


def test_views_batches_and_subviews_equal_the_materialised_tensor(folder: Path) -> None:
    task = load_task(folder, on_bad_image="skip")
    full, labels = task.tensors(CFG, progress=False)
    rows = task.image_rows(CFG, progress=False)
    assert isinstance(rows, ImageRows) and rows.shape == full.shape and len(rows) == 21
    assert rows.store.dtype == torch.uint8  # the float tensor is never built by the view
    assert torch.equal(rows[:], full) and torch.equal(rows[3:9], full[3:9])
    idx = torch.tensor([20, 0, 5, 5])
    assert torch.equal(rows[idx], full[idx])
    sub = rows.select(torch.tensor([4, 2, 19]))
    assert torch.equal(sub[:], full[[4, 2, 19]]) and torch.equal(sub.select(torch.tensor([2]))[:], full[[19]])
    got = torch.cat([x for x, _ in TensorBatches(sub, labels[[4, 2, 19]], 2)])
    assert torch.equal(got, full[[4, 2, 19]])
    assert torch.equal(take_rows(full, idx), full[idx]) and take_rows(rows, idx).shape[0] == 4
    plain = as_rows(full)
    assert torch.equal(plain.select(idx)[:], full[idx]) and as_rows(rows) is rows


def test_file_backed_cache_gives_the_same_bytes_and_leaves_nothing(tmp_path: Path) -> None:
    ram = uint8_cache((3, 2, 2), 1 << 20, str(tmp_path))
    disk = uint8_cache((3, 2, 2), 4, str(tmp_path))  # 12 bytes > 4: file-backed
    assert ram.shape == disk.shape == (3, 2, 2) and disk.dtype == torch.uint8
    disk.copy_(torch.arange(12, dtype=torch.uint8).view(3, 2, 2))
    assert torch.equal(disk.flatten(), torch.arange(12, dtype=torch.uint8))
    assert list(tmp_path.iterdir()) == []  # unlinked once mapped


def test_embedding_through_the_file_backed_cache_is_identical(folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    kw = {"input_size": 32, "cache": False, "quiet": True, "on_bad_image": "skip"}
    in_ram = embed(str(folder), "test_efficientnet", **kw)
    monkeypatch.setenv("T2V_HUB_DECODE_RAM_MB", "0.001")  # 1 KB: every task goes to disk
    on_disk = embed(str(folder), "test_efficientnet", **kw)
    assert in_ram.vector.numpy().tobytes() == on_disk.vector.numpy().tobytes()
    assert on_disk.metadata["num_bad_images"] == "1"
    decoded = tmp_path / "cache" / "decoded"
    assert decoded.is_dir() and list(decoded.iterdir()) == []
