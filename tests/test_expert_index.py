"""The memory-mapped expert index: same ranking as the in-memory path, bad indexes refused."""

from __future__ import annotations

import json
import mmap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_recommend import COMPAT, lognormal, setup  # noqa: F401 - the fixture is used by name

from t2v_hub.cli.main import main
from t2v_hub.errors import IncompatibleEmbeddingError, RecommendError
from t2v_hub.selection.distances import cdist_asym, sym_block
from t2v_hub.selection.index import INDEX_FILE, build_index, load_index, rank_index
from t2v_hub.selection.model2vec import SelectorConfig, compat_of
from t2v_hub.selection.scoring import rank_experts
from t2v_hub.selection.training import train_model2vec


def _experts(setup: dict[str, Any]) -> list[Any]:  # noqa: F811
    from t2v_hub.hub import list_experts

    experts, _ = list_experts(setup["hub"])
    return [e for e in experts if e.embedding.probe == COMPAT["probe"]]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_index_ranks_like_the_in_memory_path(setup: dict[str, Any], tmp_path: Path, dtype: str) -> None:  # noqa: F811
    experts = _experts(setup)
    out = build_index(experts, tmp_path / "idx", dtype=dtype, shard_rows=4, trivial=setup["trivial"])
    index = load_index(out)
    assert index.size == 6 and [s.shape[0] for s in index.shards] == [4, 2]
    # The shards are views of the mapped files, not copies read into memory.
    for shard, m in zip(index.shards, index._maps, strict=True):
        assert isinstance(m, mmap.mmap)
        base = np.frombuffer(m, dtype=np.uint8).__array_interface__["data"][0]
        assert base <= shard.data_ptr() < base + len(m)  # the tensor's memory *is* the mapped file
    got = rank_index(setup["target"], index, top_k=6)
    want = rank_experts(setup["target"], experts, trivial=setup["trivial"], top_k=6,
                       dtype=torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    assert [r.repo_id for r in got] == [r.repo_id for r in want]
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5) and a.task == b.task and a.url == b.url
    # Against an independent reference: cdist_asym on the float32 vectors.
    ref = cdist_asym(torch.stack([e.embedding.vector for e in experts]), setup["target"].vector,
                     setup["trivial"].vector, alpha=0.15)[:, 0]
    tol = 1e-5 if dtype == "float32" else 3e-3
    by_id = {e.repo_id: float(ref[i]) for i, e in enumerate(experts)}
    assert all(abs(r.score - by_id[r.repo_id]) < tol for r in got)
    assert index.plan().probe == COMPAT["probe"] and index.plan().count == 6
    index.close()


@pytest.mark.parametrize("bias", ["filter", "layer"])
def test_index_with_selector_matches_rank_experts(setup: dict[str, Any], tmp_path: Path, bias: str) -> None:  # noqa: F811
    experts = _experts(setup)
    ids = [e.repo_id for e in experts]
    F = torch.stack([e.embedding.vector for e in experts])
    X = torch.stack([lognormal(200 + i, center=torch.log(F[i % 6]), spread=0.4) for i in range(12)])
    errors = 0.3 + 0.5 * cdist_asym(F, X, setup["trivial"].vector).T
    errors[:, ids.index("org/expert-5")] -= 0.4
    # Trained on five of the six experts: the sixth is ranked without a bias.
    layers = torch.arange(F.shape[1]) * 4 // F.shape[1]  # 4 "layers" of equal size
    sel = train_model2vec(X, F[:5], errors[:, :5], setup["trivial"].vector, SelectorConfig(epochs=20, bias=bias),
                          expert_ids=ids[:5], compat=compat_of(experts[0].embedding), layers=layers)
    assert (sel.filter_weights is not None) == (bias == "layer")
    index = load_index(build_index(experts, tmp_path / "idx", shard_rows=4, trivial=setup["trivial"]))
    notes: list[str] = []
    got = rank_index(setup["target"], index, selector=sel, top_k=6, notes=notes)
    want = rank_experts(setup["target"], experts, selector=sel, top_k=6)
    assert [r.repo_id for r in got] == [r.repo_id for r in want]
    for a, b in zip(got, want, strict=True):
        assert a.score == pytest.approx(b.score, abs=1e-5)
        assert a.probability == pytest.approx(b.probability, abs=1e-6)
        assert a.explain["seen_in_training"] == b.explain["seen_in_training"]
    if bias == "layer":  # against the definition: weighted d_sym to the target minus alpha x to t0
        w, t0 = sel.filter_weights, setup["trivial"].vector
        ref = sym_block(F, setup["target"].vector[None], w)[:, 0] - sel.alpha * sym_block(F, t0[None], w)[:, 0]
        by_id = {e: float(ref[i]) for i, e in enumerate(ids)}
        assert all(abs(r.score - by_id[r.repo_id]) < 1e-5 for r in want)
    # A layer selector's metric is every expert's: nothing is "missing" for an unseen one.
    assert any("1 expert(s) unseen" in n for n in notes) == (bias == "filter")
    other = train_model2vec(X, F[:2], errors[:, :2], setup["trivial"].vector, SelectorConfig(epochs=2, bias="filter"),
                            expert_ids=["x/a", "x/b"], compat=compat_of(experts[0].embedding))
    with pytest.raises(RecommendError, match="different expert set"):
        rank_index(setup["target"], index, selector=other)


def test_bad_indexes_and_targets_are_refused(setup: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    experts = _experts(setup)
    out = build_index(experts, tmp_path / "idx", shard_rows=4, trivial=setup["trivial"])
    with pytest.raises(RecommendError, match="exists; pass overwrite=True"):
        build_index(experts, out, trivial=setup["trivial"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".idx.")]  # no temporary left behind
    index = load_index(out)
    with pytest.raises(IncompatibleEmbeddingError, match="probe"):
        rank_index(type(setup["target"]).create(setup["target"].vector, **{**COMPAT, "probe": "resnet18"}), index)
    with pytest.raises(RecommendError, match="top_k"):
        rank_index(setup["target"], index, top_k=0)
    index.close()
    shard = out / "experts-00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-8])  # truncated
    with pytest.raises(RecommendError, match="damaged.*rebuild"):
        load_index(out)
    with pytest.raises(RecommendError, match="not an expert index"):
        load_index(tmp_path)
    meta = json.loads((out / INDEX_FILE).read_text())
    meta["ids"] = meta["ids"][:-1]
    (out / INDEX_FILE).write_text(json.dumps(meta))
    with pytest.raises(RecommendError, match="inconsistent"):
        load_index(out)
    with pytest.raises(RecommendError, match="not comparable"):
        mixed = experts[:2] + [type(experts[0])(**{**experts[0].__dict__, "repo_id": "org/x",
                                                   "embedding": type(setup["target"]).create(
                                                       lognormal(5), **{**COMPAT, "method": "empirical"})})]
        build_index(mixed, tmp_path / "mixed", trivial=setup["trivial"])


def test_cli_index_then_recommend(setup: dict[str, Any], tmp_path: Path, capsys) -> None:  # noqa: F811
    idx = tmp_path / "cli-idx"
    hub = str(setup["hub"].root)
    t0 = str(setup["tmp"] / "t0.safetensors")
    assert main(["index", "--hub", hub, "--out", str(idx), "--shard-rows", "4", "--trivial", t0, "--format", "json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["experts"] == 6 and "org/broken" in cap.err and "other probes" in cap.err
    assert "reading expert cards" in cap.err  # progress while the hub's cards and files are read
    assert main(["index", "--hub", hub, "--out", str(idx), "--trivial", t0, "--force", "--quiet"]) == 0
    assert "reading expert cards" not in capsys.readouterr().err
    args = ["recommend", "--dataset", str(setup["tmp"] / "target.safetensors"),
            "--index", str(idx), "--trivial", str(setup["tmp"] / "t0.safetensors"), "--format", "json", "--top-k", "3"]
    assert main(args) == 0
    from_index = json.loads(capsys.readouterr().out)["recommendations"]
    assert main(["recommend", "--dataset", str(setup["tmp"] / "target.safetensors"), "--hub", hub, "--trivial",
                 str(setup["tmp"] / "t0.safetensors"), "--format", "json", "--top-k", "3"]) == 0
    from_hub = json.loads(capsys.readouterr().out)["recommendations"]
    assert [r["repo_id"] for r in from_index] == [r["repo_id"] for r in from_hub]
    assert main(["index", "--hub", hub, "--out", str(idx), "--trivial", t0]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert main(["recommend", "--dataset", "x", "--index", str(tmp_path / "nope")]) == 2
    assert "not an expert index" in capsys.readouterr().err


def test_rank_backbones_from_an_index_matches_the_hub(setup: dict[str, Any], tmp_path: Path) -> None:  # noqa: F811
    from t2v_hub.automl import rank_backbones

    idx = build_index(_experts(setup), tmp_path / "idx", shard_rows=4, trivial=setup["trivial"])
    hub = str(setup["hub"].root)
    for cands in (None, ["org/expert-3", "org/expert-1", "org/missing"]):
        a = rank_backbones(setup["target"], cands, hub=hub, index=idx, trivial=setup["trivial"], top_k=3)
        b = rank_backbones(setup["target"], cands, hub=hub, trivial=setup["trivial"], top_k=3)
        assert [(r.rank, r.repo_id, r.name) for r in a] == [(r.rank, r.repo_id, r.name) for r in b]
        assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-5)
    with pytest.raises(RecommendError, match="not resnet18"):
        rank_backbones(setup["target"], hub=hub, index=idx, probe="resnet18")
