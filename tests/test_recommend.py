"""Ranking experts: the kernel, rank_experts, rank_backbones and `t2v-hub recommend` on a local hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import RecommendError, SelectorError
from t2v_hub.hub import LocalHub, push_embedding
from t2v_hub.selection.distances import cdist, cdist_asym
from t2v_hub.selection.kernels.ranking import ExpertMatrix, sym_to_target
from t2v_hub.selection.model2vec import SelectorConfig, compat_of
from t2v_hub.selection.recommend import choose_probe
from t2v_hub.selection.scoring import rank_experts, timm_name
from t2v_hub.selection.training import train_model2vec

COMPAT = dict(probe="test_efficientnet", weights_sha256="w" * 8, layout_hash="l" * 8, method="montecarlo")
DIM = 48


def lognormal(seed: int, n: int = 1, center: torch.Tensor | None = None, spread: float = 0.6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = center if center is not None else torch.zeros(DIM)
    return torch.exp(base + spread * torch.randn(n, DIM, generator=g)).squeeze(0)


def emb(v: torch.Tensor, **meta: Any) -> Task2VecEmbedding:
    return Task2VecEmbedding.create(v, **{**COMPAT, **meta})


@pytest.fixture
def setup(local_hub: LocalHub, tmp_path: Path) -> dict[str, Any]:
    """Six experts in two clusters, one on another probe, one with a corrupted file; a target near expert 0."""
    g = torch.Generator().manual_seed(0)
    centers = [2.0 * torch.randn(DIM, generator=g), 2.0 * torch.randn(DIM, generator=g)]
    vecs = {}
    for k in range(6):
        repo = f"org/expert-{k}"
        local_hub.create_repo(repo)
        vecs[repo] = lognormal(10 + k, center=centers[k % 2], spread=0.3 + 0.1 * k)
        push_embedding(local_hub, repo, emb(vecs[repo], dataset_id=f"task-{k}"))
    local_hub.create_repo("org/other-probe")
    push_embedding(local_hub, "org/other-probe", emb(lognormal(99), probe="resnet18", dataset_id="x"))
    local_hub.create_repo("org/broken")
    res = push_embedding(local_hub, "org/broken", emb(lognormal(98), dataset_id="y"))
    f = local_hub.root / "org/broken" / res.path
    f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0")  # sha256 no longer matches the card
    target = emb(vecs["org/expert-0"] * torch.exp(0.05 * torch.randn(DIM, generator=g)), dataset_id="target")
    trivial = emb(torch.exp(0.2 * torch.randn(DIM, generator=g)), dataset_id="<trivial>")
    target.save(tmp_path / "target.safetensors")
    trivial.save(tmp_path / "t0.safetensors")
    return {"hub": local_hub, "vecs": vecs, "target": target, "trivial": trivial, "tmp": tmp_path,
            "args": ["--dataset", str(tmp_path / "target.safetensors"), "--hub", str(local_hub.root),
                     "--trivial", str(tmp_path / "t0.safetensors")]}


# -- kernel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_matches_cdist_with_dead_filters_and_extreme_scales(
    dtype: torch.dtype, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("T2V_HUB_RANK_BACKEND", backend)
    A = torch.stack([lognormal(s, spread=2.0) for s in range(40)])
    A[1] *= 1e-6  # expert far smaller than the target: the ill-conditioned fallback
    A[2] *= 1e6
    A[3, :10] = 0.0
    A[4] = 0.0
    b = lognormal(100, spread=2.0)
    b[5:9] = 0.0  # target filters dead: they still count where the expert is alive
    ref = cdist(A, b[None])[:, 0]
    got = sym_to_target(A.to(dtype), b, chunk_elements=3 * DIM)  # several chunks, one partial
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert torch.allclose(got, ref, atol=tol), (got - ref).abs().max()
    # Row blocks on a thread pool give bitwise the same result as one thread; torch's
    # own thread setting is restored afterwards.
    before = torch.get_num_threads()
    one = sym_to_target(A.to(dtype), b, chunk_elements=3 * DIM, threads=1)
    assert torch.equal(sym_to_target(A.to(dtype), b, chunk_elements=3 * DIM, threads=3), one)
    assert torch.get_num_threads() == before
    em = ExpertMatrix(A, b * 0.5 + 1e-3, dtype=dtype)
    assert torch.allclose(em.d_asym(b, 0.15), ref - 0.15 * cdist(A, (b * 0.5 + 1e-3)[None])[:, 0], atol=tol)


def test_kernel_backend_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from t2v_hub.selection.kernels.ranking import backend

    monkeypatch.setenv("T2V_HUB_RANK_BACKEND", "torch")
    assert backend() == "torch"
    with pytest.raises(ValueError, match="must be one of"):
        backend("cuda")


# -- rank_experts ----------------------------------------------------------------------------------


def test_rank_experts_matches_brute_force(setup: dict[str, Any]) -> None:
    from t2v_hub.hub import list_experts

    experts, skipped = list_experts(setup["hub"])
    assert {r for r, _ in skipped} == {"org/broken"}
    t, t0 = setup["target"], setup["trivial"]
    notes: list[str] = []
    recs = rank_experts(t, experts, trivial=t0, top_k=3, notes=notes)
    ok = [e for e in experts if e.embedding.probe == COMPAT["probe"]]
    d = cdist_asym([e.embedding for e in ok], t, t0, alpha=0.15)[:, 0]
    order = [ok[i].repo_id for i in torch.argsort(d).tolist()]
    assert [r.repo_id for r in recs] == order[:3] and recs[0].repo_id == "org/expert-0"
    r = recs[0]
    assert r.rank == 1 and r.name == "hf-hub:org/expert-0" and r.task == "task-0" and r.url.startswith("file://")
    assert r.probability is None and r.explain["bias"] == 0.0
    assert r.distance == pytest.approx(r.explain["d_sym_to_task"] - 0.15 * r.explain["d_sym_to_trivial"], abs=1e-6)
    assert r.distance == pytest.approx(float(d.min()), abs=1e-5)
    assert len(rank_experts(t, experts, trivial=t0, top_k=100)) == 6  # capped at the compatible ones
    with pytest.raises(RecommendError, match="top_k"):
        rank_experts(t, experts, trivial=t0, top_k=0)
    with pytest.raises(RecommendError, match="no experts"):
        rank_experts(t, [], trivial=t0)
    other = emb(lognormal(5), probe="vit_tiny", dataset_id="z")
    with pytest.raises(RecommendError, match=r"test_efficientnet \(montecarlo\): 6.*resnet18"):
        rank_experts(other, experts, trivial=t0)


def test_rank_with_selector_uses_biases_and_probabilities(setup: dict[str, Any]) -> None:
    from t2v_hub.hub import list_experts

    experts, _ = list_experts(setup["hub"])
    ok = [e for e in experts if e.embedding.probe == COMPAT["probe"]]
    ids = [e.repo_id for e in ok]
    F = torch.stack([e.embedding.vector for e in ok])
    X = torch.stack([lognormal(200 + i, center=torch.log(F[i % 6]), spread=0.4) for i in range(12)])
    errors = 0.45 + 0.5 * cdist_asym(F, X, setup["trivial"].vector).T
    errors[:, ids.index("org/expert-5")] -= 0.4  # expert 5 is much better than its distance says (errors stay >= 0)
    sel = train_model2vec(X, F, errors, setup["trivial"].vector, SelectorConfig(bias="scalar"), expert_ids=ids,
                          compat=compat_of(ok[0].embedding))
    recs = rank_experts(setup["target"], experts, selector=sel, top_k=6)
    assert recs[0].repo_id == "org/expert-5"
    assert recs[0].explain["bias"] < -0.05 and recs[0].explain["seen_in_training"] is True
    assert sum(r.probability for r in recs) == pytest.approx(1.0, abs=1e-5)
    assert all(a.score <= b.score for a, b in zip(recs, recs[1:], strict=False))
    # An expert the selector never saw: ranked with b_j = 0 and a note.
    sel2 = train_model2vec(X, F[:5], errors[:, :5], setup["trivial"].vector, SelectorConfig(bias="scalar", epochs=5),
                           expert_ids=ids[:5], compat=compat_of(ok[0].embedding))
    notes: list[str] = []
    recs2 = rank_experts(setup["target"], experts, selector=sel2, top_k=6, notes=notes)
    unseen = [r for r in recs2 if r.repo_id == ids[5]][0]
    assert unseen.explain["seen_in_training"] is False and unseen.explain["offset"] == 0.0
    assert any("unseen" in n and ids[5] in n for n in notes)


def test_choose_probe_and_timm_name(setup: dict[str, Any]) -> None:
    from t2v_hub.hub import list_experts

    experts, _ = list_experts(setup["hub"])
    plan = choose_probe(experts)
    assert (plan.probe, plan.method, plan.count) == ("test_efficientnet", "montecarlo", 6)
    assert choose_probe(experts, probe="resnet18").count == 1
    with pytest.raises(RecommendError, match="resnet18"):
        choose_probe(experts, probe="resnet50")
    hub = setup["hub"]
    # A local hub's repos are local folders, with or without weights (never a Hub download).
    assert timm_name("org/expert-0", hub) == f"local-dir:{hub.root / 'org/expert-0'}"
    assert timm_name("org/expert-0", None) == "hf-hub:org/expert-0"


def test_rank_backbones_candidates(setup: dict[str, Any]) -> None:
    from t2v_hub.automl import rank_backbones

    notes: list[str] = []
    recs = rank_backbones(setup["target"], ["org/expert-3", "org/expert-1", "org/missing"], hub=str(setup["hub"].root),
                          trivial=setup["trivial"], top_k=5, notes=notes)
    assert {r.repo_id for r in recs} == {"org/expert-1", "org/expert-3"}
    assert all(r.name.startswith("local-dir:") for r in recs) and any("org/missing" in n for n in notes)
    with pytest.raises(RecommendError, match="candidates"):
        rank_backbones(setup["target"], ["org/missing"], hub=setup["hub"], trivial=setup["trivial"])


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_recommend_table_json_explain(setup: dict[str, Any], capsys) -> None:
    assert main(["recommend", *setup["args"], "--format", "json", "--top-k", "3"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    recs = out["recommendations"]
    assert [r["rank"] for r in recs] == [1, 2, 3] and recs[0]["repo_id"] == "org/expert-0"
    assert out["num_ranked"] == 6 and {s["repo_id"] for s in out["skipped"]} == {"org/broken", "org/other-probe"}
    # Skipped experts are counted and named on stderr.
    assert "1 expert(s) skipped" in cap.err and "org/broken" in cap.err
    assert "1 expert(s) left out" in cap.err and "org/other-probe" in cap.err
    assert main(["recommend", *setup["args"], "--explain", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:7] == ["rank", "model", "d_asym", "score", "d_task", "d_trivial", "bias"]
    # A local card is a plain path in the table (relative to the working directory when under it).
    assert lines[1].split()[1] == "org/expert-0" and "task-0" in lines[1]
    assert lines[1].split()[-1].endswith("README.md") and "file://" not in lines[1]
    assert len(lines) == 3


def test_cli_recommend_bad_inputs(setup: dict[str, Any], tmp_path: Path, capsys) -> None:
    args = setup["args"]
    assert main(["recommend", *args, "--top-k", "0"]) == 2
    assert "--top-k" in capsys.readouterr().err
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    assert main(["recommend", *args[:2], "--hub", str(empty), *args[4:]]) == 2
    assert "no experts found" in capsys.readouterr().err
    other = tmp_path / "other.safetensors"
    emb(lognormal(3), probe="vit_tiny").save(other)
    assert main(["recommend", "--dataset", str(other), *args[2:]]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: no expert shares") and "test_efficientnet" in last and "resnet18" in last


def _selector_for(setup: dict[str, Any], ids: list[str], **compat_over: str) -> Any:
    F = torch.stack([setup["vecs"][i] for i in ids])
    X = torch.stack([lognormal(300 + i) for i in range(4)])
    errors = torch.rand(4, len(ids), generator=torch.Generator().manual_seed(0))
    compat = {**compat_of(setup["target"]), **compat_over}
    return train_model2vec(X, F, errors, setup["trivial"].vector, SelectorConfig(epochs=3, bias="filter"), expert_ids=ids,
                           compat=compat)


def test_cli_recommend_with_selector_file_and_hub_repo(setup: dict[str, Any], capsys) -> None:
    tmp, hub = setup["tmp"], setup["hub"]
    ids = [f"org/expert-{k}" for k in range(6)]
    _selector_for(setup, ids).save(tmp / "sel.safetensors")
    assert main(["recommend", *setup["args"], "--selector", str(tmp / "sel.safetensors"), "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)["recommendations"]
    assert all(r["probability"] is not None for r in recs)
    # The same selector from a hub repo (downloaded through the hub layer).
    hub.create_repo("org/selector")
    state = hub.read_card("org/selector")
    hub.commit("org/selector", {"selector.safetensors": (tmp / "sel.safetensors").read_bytes()}, "add",
               parent_commit=state.revision)
    assert main(["recommend", *setup["args"], "--selector", "org/selector", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["recommendations"] == recs
    # Selector for another probe / another expert set: errors.
    _selector_for(setup, ids, probe="resnet18").save(tmp / "p.safetensors")
    assert main(["recommend", *setup["args"], "--selector", str(tmp / "p.safetensors")]) == 2
    assert "probe" in capsys.readouterr().err
    sel = _selector_for(setup, ids)
    sel.expert_ids = [f"zoo/m{k}" for k in range(6)]
    sel.save(tmp / "x.safetensors")
    assert main(["recommend", *setup["args"], "--selector", str(tmp / "x.safetensors")]) == 2
    assert "different expert set" in capsys.readouterr().err
    with pytest.raises(SelectorError, match="not found"):
        from t2v_hub.selection.model2vec import load_selector

        load_selector(tmp / "missing.safetensors")


def test_cli_recommend_embeds_the_dataset(local_hub: LocalHub, tmp_path: Path, monkeypatch, capsys) -> None:
    """End to end: --dataset is an image folder embedded with the probe the experts share."""
    import numpy as np
    from PIL import Image

    from t2v_hub.probes import create_probe

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    p = create_probe("test_efficientnet", 2, input_size=32)
    compat = dict(probe=p.name, weights_sha256=p.config.weights_sha256, layout_hash=p.layout.hash(),
                  method="montecarlo", input_size=[3, 32, 32], include_norm=False)
    dim = p.layout.dim
    rng = np.random.default_rng(0)
    root = tmp_path / "imgs"
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            a = (rng.random((32, 32, 3)) * 120).astype("uint8")
            a[..., c] += 120
            Image.fromarray(a).save(root / f"c{c}" / f"{i}.png")
    for k in range(3):
        local_hub.create_repo(f"org/e{k}")
        v = lognormal(k).repeat(dim // DIM + 1)[:dim]
        push_embedding(local_hub, f"org/e{k}", Task2VecEmbedding.create(v, dataset_id=f"t{k}", **compat))
    t0 = Task2VecEmbedding.create(torch.ones(dim), **compat)
    t0.save(tmp_path / "t0.safetensors")
    assert main(["recommend", "--dataset", str(root), "--hub", str(local_hub.root), "--trivial",
                 str(tmp_path / "t0.safetensors"), "--quiet", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["target"]["probe"] == "test_efficientnet" and len(out["recommendations"]) == 3
    assert out["target"]["dataset_id"] == f"local:{root.name}"


def test_a_task_embedding_given_as_trivial_gets_a_note(tmp_path) -> None:
    """--trivial takes any compatible embedding (a per-task t0 is a measured variant), but a task's
    embedding where t0 was meant is named, not silently used."""
    import shutil

    from t2v_hub.selection.recommend import recommend

    zoo = Path(__file__).resolve().parent.parent / "examples" / "zoo"
    shutil.copytree(zoo, tmp_path / "zoo")
    emb = lambda name: Task2VecEmbedding.load(  # noqa: E731
        tmp_path / "zoo" / "t2v-zoo" / name / "task2vec" / "tf_efficientnet_lite0.safetensors")
    target, other = emb("fashion10"), emb("mnist10")
    res = recommend(target, hub=str(tmp_path / "zoo"), trivial=other, top_k=1)
    assert any("that of a task (zoo/mnist10)" in n for n in res.notes)
    t0 = Task2VecEmbedding(other.vector, {**other.metadata, "kind": "trivial"})
    res = recommend(target, hub=str(tmp_path / "zoo"), trivial=t0, top_k=1)
    assert not any("that of a task" in n for n in res.notes)
