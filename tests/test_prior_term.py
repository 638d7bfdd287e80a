"""d_asym of variational embeddings with each expert's own learned prior as t0, against closed forms."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

import t2v_hub
from t2v_hub.constants import VARIATIONAL_ASYM_ALPHA
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import RecommendError
from t2v_hub.selection.distances import cdist, d_sym, paired_sym
from t2v_hub.selection.layer_weights import layer_ids
from t2v_hub.selection.prior_term import has_learned_prior, precision_view, prior_distances
from t2v_hub.selection.scoring import rank_experts
from t2v_hub.task2vec import TensorTask


@dataclass
class _Expert:
    repo_id: str
    embedding: Task2VecEmbedding
    task: str = "t"
    url: str = ""


@pytest.fixture(scope="module")
def variational() -> Task2VecEmbedding:
    g = torch.Generator().manual_seed(0)
    task = TensorTask(torch.randn(16, 3, 32, 32, generator=g), torch.tensor([0, 1] * 8))
    return t2v_hub.embed(task, "test_efficientnet", method="variational", input_size=32, cache=False, quiet=True,
                         fisher_options={"steps": 4})


def _variant(base: Task2VecEmbedding, seed: int, prior_scale: float = 1.0, vector_scale: float = 1.0,
             ) -> Task2VecEmbedding:
    """Another task in the same space: a reshuffled vector and a rescaled prior."""
    g = torch.Generator().manual_seed(seed)
    v = base.vector[torch.randperm(base.dim, generator=g)] * vector_scale + 1e-6
    meta = dict(base.metadata)
    mc = json.loads(meta["method_config"])
    mc["prior_precision_per_layer"] = [p * prior_scale * float(1 + torch.rand(1, generator=g))
                                       for p in mc["prior_precision_per_layer"]]
    meta["method_config"] = json.dumps(mc)
    return Task2VecEmbedding(v, meta)


def test_paired_sym_is_the_diagonal_of_cdist() -> None:
    g = torch.Generator().manual_seed(1)
    A, B = torch.rand(5, 40, generator=g), torch.rand(5, 40, generator=g)
    A[0, :10] = 0  # dead filters in one task only
    A[1, :5], B[1, :5] = 0, 0  # dead in both: they contribute nothing
    got = paired_sym(A, B)
    assert torch.allclose(got, cdist(A, B).diagonal(), atol=1e-6)
    assert torch.allclose(got, torch.tensor([d_sym(a, b) for a, b in zip(A, B, strict=True)]), atol=1e-6)


def test_the_precision_view_is_the_stored_hessian_plus_half_beta_times_the_layer_prior(variational) -> None:
    assert has_learned_prior(variational)
    mc = variational.config("method_config")
    layers = layer_ids(variational)
    P, t0 = precision_view(variational, layers)
    # Closed form, filter by filter: (beta / 2) * lambda^2 of the filter's layer.
    expected_t0 = torch.tensor([0.5 * mc["beta"] * mc["prior_precision_per_layer"][int(k)] for k in layers])
    assert torch.allclose(t0, expected_t0, rtol=1e-6)
    assert torch.allclose(P, variational.vector + expected_t0, rtol=1e-6)


def test_ranking_uses_each_experts_own_prior(variational) -> None:
    experts = [_Expert(f"e/{i}", _variant(variational, i, prior_scale=[0.2, 1.0, 5.0, 1.0][i],
                                          vector_scale=[1.0, 3.0, 0.5, 1.0][i])) for i in range(4)]
    recs = rank_experts(variational, experts, top_k=4, notes=(notes := []))
    assert any("own learned prior" in n for n in notes)
    layers = layer_ids(variational)
    p_t, _ = precision_view(variational, layers)
    naive = {}
    for ex in experts:  # the reference formula, one expert at a time
        p_e, t0_e = precision_view(ex.embedding, layers)
        naive[ex.repo_id] = d_sym(p_e, p_t) - VARIATIONAL_ASYM_ALPHA * d_sym(p_e, t0_e)
    assert [r.repo_id for r in recs] == sorted(naive, key=naive.get)
    for r in recs:
        assert r.score == pytest.approx(naive[r.repo_id], abs=1e-5)
        assert r.explain["alpha"] == VARIATIONAL_ASYM_ALPHA
        assert r.explain["d_sym_to_task"] - r.explain["alpha"] * r.explain["d_sym_to_trivial"] == pytest.approx(
            r.distance, abs=1e-6)
    # The term does something: its own-prior distances differ between experts.
    _, own = prior_distances(variational, [ex.embedding for ex in experts])
    assert float(own.max() - own.min()) > 1e-3
    # alpha=0 is d_sym on the precisions.
    plain = rank_experts(variational, experts, top_k=4, alpha=0.0)
    assert all(r.explain["trivial_term"] == 0 for r in plain)


def test_montecarlo_embeddings_keep_the_probe_t0(variational) -> None:
    mc = Task2VecEmbedding(variational.vector + 1e-3, {**variational.metadata, "method": "montecarlo"})
    assert not has_learned_prior(mc)


def test_a_prior_of_the_wrong_length_is_refused(variational) -> None:
    meta = dict(variational.metadata)
    cfg = json.loads(meta["method_config"])
    cfg["prior_precision_per_layer"] = cfg["prior_precision_per_layer"][:-1]
    meta["method_config"] = json.dumps(cfg)
    bad = Task2VecEmbedding(variational.vector, meta)
    with pytest.raises(RecommendError, match="per-layer precisions"):
        rank_experts(variational, [_Expert("e/bad", bad)], top_k=1)


def test_cli_recommend_ranks_variational_experts_by_their_priors(local_hub, tmp_path, monkeypatch, capsys) -> None:
    """End to end: image folders embedded with --method variational, pushed to a LocalHub, ranked from the CLI."""
    import numpy as np
    from PIL import Image

    from t2v_hub.cli.main import main
    from t2v_hub.hub import push_embedding

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)

    def folder(name: str, channel: int) -> str:
        root = tmp_path / name
        for c in range(2):
            (root / f"c{c}").mkdir(parents=True)
            for i in range(6):
                a = (rng.random((32, 32, 3)) * 120).astype("uint8")
                a[..., (channel + c) % 3] += 120
                Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
        return str(root)

    opts = dict(method="variational", input_size=32, cache=False, quiet=True, fisher_options={"steps": 3})
    for k in range(3):
        local_hub.create_repo(f"org/e{k}")
        push_embedding(local_hub, f"org/e{k}", t2v_hub.embed(folder(f"d{k}", k), "test_efficientnet", **opts))
    target = folder("target", 1)
    capsys.readouterr()
    assert main(["recommend", "--dataset", target, "--hub", str(local_hub.root), "--method", "variational",
                 "--fisher-steps", "3", "--quiet", "--format", "json"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert len(out["recommendations"]) == 3
    assert all(r["explain"]["alpha"] == VARIATIONAL_ASYM_ALPHA for r in out["recommendations"])
    assert any("own learned prior" in n for n in out.get("notes", [])) or "own learned prior" in captured.err
    own = [r["explain"]["d_sym_to_trivial"] for r in out["recommendations"]]
    assert max(own) - min(own) > 1e-4  # each expert's own prior: the term differs between experts
    # The same ranking from an index the CLI builds of that hub.
    idx = tmp_path / "idx"
    assert main(["index", "--hub", str(local_hub.root), "--out", str(idx), "--method", "variational", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["recommend", "--dataset", target, "--index", str(idx), "--method", "variational",
                 "--fisher-steps", "3", "--quiet", "--format", "json"]) == 0
    from_index = json.loads(capsys.readouterr().out)
    assert [r["repo_id"] for r in from_index["recommendations"]] == [r["repo_id"] for r in out["recommendations"]]
    for a, b in zip(from_index["recommendations"], out["recommendations"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)


@pytest.mark.parametrize("shard_rows", [1, 3, 8])
def test_the_index_ranks_variational_experts_as_the_hub_does(variational, tmp_path, monkeypatch, shard_rows) -> None:
    from t2v_hub.selection import index as index_mod
    from t2v_hub.selection import index_write
    from t2v_hub.selection.index import build_index, load_index, rank_index

    monkeypatch.setattr(index_write, "PRIOR_CHUNK_ROWS", 2)  # chunks that cut across shards
    monkeypatch.setattr(index_mod, "PRIOR_CHUNK_ROWS", 2)
    experts = [_Expert(f"e/{i}", _variant(variational, i, prior_scale=0.2 + i, vector_scale=1.0 + 0.3 * (i % 3)))
               for i in range(7)]
    t0 = Task2VecEmbedding(variational.vector + 1.0, dict(variational.metadata))  # any valid t0: not used here
    idx = load_index(build_index(experts, tmp_path / "idx", shard_rows=shard_rows, trivial=t0))
    assert idx.prior_scale is not None and idx.prior_scale.shape[0] == 7
    for alpha in (None, 0.0, 1.0):
        hub = rank_experts(variational, experts, top_k=7, alpha=alpha)
        got = rank_index(variational, idx, top_k=7, alpha=alpha, notes=(notes := []))
        assert [r.repo_id for r in got] == [r.repo_id for r in hub]
        for a, b in zip(got, hub, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-6)
            assert a.explain["d_sym_to_trivial"] == pytest.approx(b.explain["d_sym_to_trivial"], abs=1e-6)
        assert any("own learned prior" in n for n in notes)
    # The stored term is each expert's own: the naive formula, one expert at a time.
    layers = layer_ids(variational)
    for i, ex in enumerate(experts):
        p_e, t0_e = precision_view(ex.embedding, layers)
        assert float(idx.to_own_prior[i]) == pytest.approx(d_sym(p_e, t0_e), abs=1e-6)
    idx.close()


def test_an_index_without_priors_says_so_and_one_with_damaged_priors_is_refused(variational, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    from t2v_hub.selection.index import build_index, load_index

    experts = [_Expert(f"e/{i}", _variant(variational, i)) for i in range(3)]
    plain = Task2VecEmbedding(variational.vector + 1e-3, {**variational.metadata, "method_config": "{}"})
    t0 = Task2VecEmbedding(variational.vector + 1.0, dict(variational.metadata))
    # One expert without a recorded prior: no priors are stored, ranking uses the probe's t0 as the hub does.
    mixed = load_index(build_index([*experts, _Expert("e/plain", plain)], tmp_path / "mixed", trivial=t0))
    assert mixed.prior_scale is None
    mixed.close()
    root = build_index(experts, tmp_path / "idx", trivial=t0)
    f = root / "trivial.safetensors"
    tensors = load_file(str(f))
    tensors["prior_scale"] = -tensors["prior_scale"]
    save_file(tensors, str(f))
    with pytest.raises(RecommendError, match="trivial.safetensors does not match the index; rebuild it"):
        load_index(root)
    del tensors["layers"]
    save_file(tensors, str(f))
    with pytest.raises(RecommendError, match="does not match the index"):
        load_index(root)


def test_recommend_from_an_index_keeps_the_prior_term(variational, tmp_path, monkeypatch) -> None:
    from t2v_hub.selection import recommend as recommend_mod
    from t2v_hub.selection.index import build_index

    experts = [_Expert(f"e/{i}", _variant(variational, i, prior_scale=0.5 + i)) for i in range(4)]
    t0 = Task2VecEmbedding(variational.vector + 1.0, dict(variational.metadata))
    root = build_index(experts, tmp_path / "idx", trivial=t0)
    monkeypatch.setattr(recommend_mod, "_target", lambda *a, **k: variational)
    res = recommend_mod.recommend(TensorTask(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1])), index=root, top_k=4)
    assert [r.repo_id for r in res.recommendations] == [r.repo_id for r in rank_experts(variational, experts, top_k=4)]
    assert not any("holds no per-expert learned priors" in n for n in res.notes)
