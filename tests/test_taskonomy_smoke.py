"""Smoke run of the Taskonomy-style experiment (``python -m benchmarks.taskonomy --config tiny``).

Random ``test_efficientnet`` at 32 px on 60 Fashion-MNIST images: checks the heads'
architecture (supplement 1.1), the shapes of every target, and the structure and
validity of the results (distances, separation statistics, figure). Separation itself
is not asserted: with a random tiny probe it means nothing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from benchmarks.taskonomy import (  # noqa: E402 - after the optional-dependency skips
    TASKS,
    LabelHead,
    separation,
)
from benchmarks.zoo.data import fashion_available  # noqa: E402

needs_fashion = pytest.mark.skipif(not fashion_available(), reason="Fashion-MNIST package not installed")


def test_label_head_pools_then_classifies() -> None:
    # The pixel decoder is the library's (t2v_hub.probes.decoder; tests/test_dense_tasks.py).
    label = LabelHead(64, 10)
    assert label(torch.randn(2, 64, 2, 2)).shape == (2, 10)


def test_separation_statistics_on_a_known_matrix() -> None:
    """Two tight, far-apart groups: perfect silhouette, recovered by clustering, smallest p."""
    groups = ["2D"] * 4 + ["semantic"] * 3
    lab = np.array([0] * 4 + [1] * 3)
    D = np.where(lab[:, None] == lab[None, :], 0.1, 0.9)
    np.fill_diagonal(D, 0.0)
    s = separation(D, groups)
    assert s["average_linkage_recovers_split"] and s["silhouette"] > 0.8
    assert s["num_relabellings"] == 35 and s["silhouette_permutation_p"] == pytest.approx(1 / 35)
    # Swap one task between groups: the split is no longer what the distances say.
    s2 = separation(D, ["2D"] * 3 + ["semantic"] * 4)
    assert not s2["average_linkage_recovers_split"] and s2["silhouette"] < s["silhouette"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, object]:
    from benchmarks.taskonomy import run

    out = tmp_path_factory.mktemp("taskonomy")
    before = torch.get_num_threads()
    try:
        return run("tiny", results_dir=out), out
    finally:
        torch.set_num_threads(before)


@needs_fashion
def test_tiny_run_structure(tiny) -> None:
    result, out = tiny
    names = [t.name for t in TASKS]
    assert result["names"] == names
    assert set(result["groups"]) == {"2D", "semantic", "geometric"}
    D = np.array(result["distance_matrix"])
    assert D.shape == (len(names), len(names))
    assert np.allclose(D, D.T) and np.allclose(np.diag(D), 0) and np.all(np.isfinite(D))
    assert np.all(D[~np.eye(len(names), dtype=bool)] > 0)  # distinct tasks, distinct embeddings
    saved = json.loads((out / "taskonomy_tiny.json").read_text())
    assert saved["names"] == names
    assert (out / "taskonomy_tiny_distances.png").stat().st_size > 5000


@needs_fashion
def test_tiny_run_tasks_and_scores(tiny) -> None:
    result, _ = tiny
    t = result["tasks"]
    assert t["segmentation"]["head_output"] == [2, 8, 8]
    assert t["edges"]["head_output"] == [1, 8, 8] and t["inpainting"]["head_output"] == [1, 4, 4]
    assert t["class10"]["head_output"] == [10] and t["coarse5"]["head_output"] == [5]
    for name, task in t.items():
        assert task["embedding_norm"] > 0 and math.isfinite(task["embedding_norm"]), name
        assert 0 <= task["split_half_distance"] <= 2, name
    sep = result["separation_2d_vs_semantic"]
    assert -1 <= sep["silhouette"] <= 1 and 0 < sep["silhouette_permutation_p"] <= 1
    assert sep["mean_within"] > 0 and sep["mean_between"] > 0
    assert result["seconds"]["total"] > 0
