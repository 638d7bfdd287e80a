"""``load_task("user/name")`` against the test hub server (tests/hub_server.py).

The dataset repo is real parquet written by ``datasets``; ``datasets`` and
``huggingface_hub`` talk HTTP to 127.0.0.1 exactly as they would to the Hub
(info, tree listing, resolve with HEAD/GET/Range), so nothing touches the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets
import huggingface_hub.constants as hfc
import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from t2v_hub.data import load_task
from t2v_hub.errors import DataError, DatasetNotFoundError

REPO = "user/name"
NAMES = ["cat", "dog", "fox"]
FEATS = Features({"image": Image(), "label": ClassLabel(names=NAMES)})


def _split(n: int, offset: int = 0) -> Dataset:
    imgs = [PILImage.fromarray(np.full((12, 10, 3), (i * 17 + offset) % 256, np.uint8)) for i in range(n)]
    return Dataset.from_dict({"image": imgs, "label": [i % len(NAMES) for i in range(n)]}, features=FEATS)


@pytest.fixture
def hub_dataset(hub_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``user/name`` (train: 12 rows, test: 6) on the server, with both clients pointed at it."""
    url = hub_server.url
    monkeypatch.setenv("HF_ENDPOINT", url)
    # Both libraries read HF_ENDPOINT at import time: patch the module values.
    monkeypatch.setattr(hfc, "ENDPOINT", url)
    monkeypatch.setattr(hfc, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", url)
    monkeypatch.setattr(
        datasets.config, "HUB_DATASETS_URL", url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    )
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    d = hub_server.dataset_dir(REPO)
    (d / "data").mkdir()
    _split(12).to_parquet(str(d / "data" / "train-00000-of-00001.parquet"))
    _split(6, offset=5).to_parquet(str(d / "data" / "test-00000-of-00001.parquet"))
    return hub_server


def _sha(server: Any) -> str:
    found = server.dataset_files(REPO)
    assert found is not None
    return found[0]


def test_hub_id_loads(hub_dataset: Any) -> None:
    task = load_task(REPO)
    assert task.num_samples == 12 and task.num_classes == 3
    assert task.class_names == NAMES
    md = task.metadata
    assert md["dataset_id"] == REPO and md["split"] == "train"
    assert md["image_column"] == "image" and md["label_column"] == "label"
    assert md["dataset_revision"] == _sha(hub_dataset)
    # It went through the dataset endpoints, not the model ones.
    assert hub_dataset.calls("GET", rf"/api/datasets/{REPO}(/revision/.*)?")
    assert hub_dataset.calls(
        "GET", rf"/datasets/{REPO}/resolve/[0-9a-f]{{40}}/data/train-00000-of-00001\.parquet"
    )
    assert not hub_dataset.calls("GET", r"/api/models.*")


def test_hub_split_and_revision(hub_dataset: Any) -> None:
    sha = _sha(hub_dataset)
    task = load_task(REPO, split="test", revision=sha)
    assert task.num_samples == 6 and task.metadata["split"] == "test"
    assert task.metadata["dataset_revision"] == sha


def test_hub_missing_split_lists_splits(hub_dataset: Any) -> None:
    with pytest.raises(DataError, match="validation") as info:
        load_task(REPO, split="validation")
    assert "train" in str(info.value) and "test" in str(info.value)


def test_hub_unknown_repo(hub_dataset: Any) -> None:
    with pytest.raises(DatasetNotFoundError, match="user/missing"):
        load_task("user/missing")
    assert any("/datasets/user/missing" in r.path for r in hub_dataset.requests)  # asked the server


def test_hub_unknown_revision(hub_dataset: Any) -> None:
    with pytest.raises((DatasetNotFoundError, DataError)):
        load_task(REPO, revision="0" * 40)


def test_hub_streaming_max_samples(hub_dataset: Any) -> None:
    task = load_task(REPO, streaming=True, max_samples=5)
    assert task.num_samples == 5
    assert task.metadata["dataset_id"] == REPO
    x, y = task.tensors(
        {
            "input_size": (3, 8, 8),
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "crop_pct": 1.0,
            "crop_mode": "center",
        },
        progress=False,
    )
    assert tuple(x.shape) == (5, 3, 8, 8) and len(y) == 5


def test_cli_embed_hub_dataset(hub_dataset: Any, tmp_path: Path) -> None:
    from t2v_hub.cli.main import main
    from t2v_hub.embedding import Task2VecEmbedding

    out = tmp_path / "e.safetensors"
    args = ["embed", "--dataset", REPO, "--probe", "test_efficientnet", "--input-size", "32"]
    assert main([*args, "--out", str(out), "--quiet", "--no-cache"]) == 0
    emb = Task2VecEmbedding.load(out)
    assert emb.metadata["dataset_id"] == REPO


def test_server_dataset_tree_and_paths_info(hub_dataset: Any) -> None:
    """The listing endpoints HfFileSystem uses (glob, info): recursion, pagination, paths-info."""
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_dataset.url)
    old = _sha(hub_dataset)
    (hub_dataset.dataset_dir(REPO) / "README.md").write_text("---\nlicense: mit\n---\n# x\n")
    sha = _sha(hub_dataset)
    assert sha != old  # a new file is a new commit
    paths = sorted(e.path for e in api.list_repo_tree(REPO, repo_type="dataset", recursive=True))
    assert paths == [
        "README.md",
        "data",
        "data/test-00000-of-00001.parquet",
        "data/train-00000-of-00001.parquet",
    ]
    assert (
        len(hub_dataset.calls("GET", rf"/api/datasets/{REPO}/tree/main")) == 2
    )  # page size 2: followed Link
    top = sorted(e.path for e in api.list_repo_tree(REPO, repo_type="dataset", revision=sha))
    assert top == ["README.md", "data"]
    info = api.get_paths_info(
        REPO, ["data/test-00000-of-00001.parquet", "data", "nope"], repo_type="dataset", expand=True
    )
    assert [type(i).__name__ for i in info] == ["RepoFile", "RepoFolder"]
    assert info[0].size > 0 and info[0].lfs is not None and info[0].last_commit.oid == sha
    ds_info = api.dataset_info(REPO)
    assert ds_info.sha == sha and ds_info.card_data["license"] == "mit"
    assert {s.rfilename for s in ds_info.siblings} == {p for p in paths if p != "data"}
