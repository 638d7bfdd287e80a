"""Looking at tasks: clustered heatmap, t-SNE map and `t2v-hub matrix`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.plots import cluster_order, embedding_map, plot_distance_matrix, plot_embedding_map
from t2v_hub.selection.distances import cdist_asym, pdist

COMPAT = dict(probe="test_efficientnet", weights_sha256="w" * 8, layout_hash="l" * 8, method="montecarlo")
PNG = b"\x89PNG\r\n\x1a\n"


def clustered(n: int, d: int = 32, k: int = 4, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    centers = 2.0 * torch.randn(k, d, generator=g)
    groups = [i % k for i in range(n)]
    X = torch.exp(centers[groups] + 0.3 * torch.randn(n, d, generator=g))
    return X, [f"family-{c}" for c in groups]


def test_cluster_order_groups_similar_tasks() -> None:
    X, groups = clustered(24)
    order = cluster_order(pdist(X).numpy())
    assert sorted(order.tolist()) == list(range(24))
    # In clustered order every family is contiguous: the family changes exactly k-1 times.
    seq = [groups[i] for i in order]
    assert sum(a != b for a, b in zip(seq, seq[1:], strict=False)) == 3


def test_heatmap_and_map_at_100_tasks(tmp_path: Path) -> None:
    X, groups = clustered(100)
    D = pdist(X)
    labels = [f"dataset/task-{i:03d}-with-a-long-name" for i in range(100)]
    heat = plot_distance_matrix(D, labels, tmp_path / "heat.png")
    scat = plot_embedding_map(D, labels, groups, tmp_path / "map.png", color_by="family")
    for p in (heat, scat):
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 15_000
    xy = embedding_map(D.numpy())
    assert xy.shape == (100, 2) and np.isfinite(xy).all()
    # Tiny sets use classical MDS and still give a picture.
    small = plot_embedding_map(pdist(X[:3]), labels[:3], groups[:3], tmp_path / "small.png")
    assert small.read_bytes().startswith(PNG)
    with pytest.raises(ValueError, match="square"):
        plot_distance_matrix(D[:5, :4], labels[:5], tmp_path / "bad.png")


@pytest.fixture
def emb_dir(tmp_path: Path) -> Path:
    X, groups = clustered(8, d=24)
    d = tmp_path / "embs"
    d.mkdir()
    for i, (x, g) in enumerate(zip(X, groups, strict=True)):
        meta = {"dataset_id": f"ds,{i}" if i == 0 else f"ds{i}", "family": g}
        Task2VecEmbedding.create(x, **COMPAT, **meta).save(d / f"e{i}.safetensors")
    (d / "e7.safetensors").unlink()
    Task2VecEmbedding.create(X[7], **COMPAT, family=groups[7]).save(d / "nodsid.safetensors")
    Task2VecEmbedding.create(torch.ones(24), **COMPAT).save(tmp_path / "t0.safetensors")
    return d


def test_cli_matrix_csv_json_and_plots(emb_dir: Path, tmp_path: Path, capsys) -> None:
    files = sorted(emb_dir.glob("*.safetensors"))
    embs = [Task2VecEmbedding.load(f) for f in files]
    ref = pdist(embs)
    heat, scat = tmp_path / "h.png", tmp_path / "m.png"
    assert main(["matrix", str(emb_dir), "--plot", str(heat), "--embedding-plot", str(scat),
                 "--color-by", "family"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0][1] == "ds,0" and rows[0][-1] == "nodsid"  # quoted label; file stem where no dataset_id
    got = torch.tensor([[float(v) for v in r[1:]] for r in rows[1:]])
    assert torch.allclose(got, ref, atol=1e-6)
    assert heat.stat().st_size > 10_000 and scat.stat().st_size > 10_000
    assert main(["matrix", *map(str, files), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert torch.allclose(torch.tensor(out["matrix"]), ref, atol=1e-7) and out["asymmetric"] is False
    t0 = Task2VecEmbedding.load(tmp_path / "t0.safetensors")
    assert main(["matrix", str(emb_dir), "--asymmetric", "--alpha", "0.3", "--trivial", str(tmp_path / "t0.safetensors"),
                 "--format", "json"]) == 0
    A = torch.tensor(json.loads(capsys.readouterr().out)["matrix"])
    want = cdist_asym(embs, embs, t0, alpha=0.3)
    want.fill_diagonal_(0.0)
    assert torch.allclose(A, want, atol=1e-6) and not torch.allclose(A, A.T)


def test_cli_matrix_bad_inputs(emb_dir: Path, tmp_path: Path, capsys) -> None:
    one = sorted(emb_dir.glob("*.safetensors"))[0]
    assert main(["matrix", str(one)]) == 2
    assert "at least two" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    Task2VecEmbedding.create(torch.rand(24), **{**COMPAT, "probe": "resnet18"}).save(other)
    assert main(["matrix", str(emb_dir), str(other)]) == 2
    assert "probe" in capsys.readouterr().err
    assert main(["matrix", str(emb_dir), "--plot", str(tmp_path / "missing" / "x.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_matrix_of_a_whole_hub(tmp_path, capsys) -> None:
    from pathlib import Path as P

    zoo = P(__file__).resolve().parent.parent / "examples" / "zoo"
    assert main(["matrix", "--hub", str(zoo), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["labels"]) == 12 and "zoo/fashion10" in out["labels"]
    m = torch.tensor(out["matrix"])
    assert m.shape == (12, 12) and torch.allclose(m, m.T) and float(m.diagonal().abs().max()) == 0.0
