"""Two-stage recommend (TASK2VEC shortlist, then a transferability rerank) and `t2v-hub score`, end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from PIL import Image

import t2v_hub
from t2v_hub.cli.main import main
from t2v_hub.errors import RecommendError
from t2v_hub.hub import LocalHub, push_embedding
from t2v_hub.selection.features import ModelLoadError, load_model, score_models
from t2v_hub.selection.transferability import TransferabilityError
from t2v_hub.task2vec import TensorTask, embed

PROBE = "test_efficientnet"


def _images(folder: Path, classes: int = 3, per_class: int = 8) -> Path:
    g = torch.Generator().manual_seed(0)
    for c in range(classes):
        (folder / f"c{c}").mkdir(parents=True)
        for i in range(per_class):
            base = torch.tensor([60 + 60 * c, 200 - 50 * c, 40 + 30 * i % 200]).float()
            px = (base[:, None, None] + 30 * torch.randn(3, 24, 24, generator=g)).clamp(0, 255).byte()
            Image.fromarray(px.permute(1, 2, 0).numpy()).save(folder / f"c{c}" / f"{i}.png")
    return folder


def make_zoo(root: Path) -> dict[str, Any]:
    """Three experts with real test-probe embeddings; two hold timm weights (config.json + model.safetensors)."""
    hub = LocalHub(root / "hub")
    g = torch.Generator().manual_seed(1)
    for k, arch in enumerate(["test_resnet", "test_vit", None]):
        repo = f"org/expert-{k}"
        hub.create_repo(repo)
        x, y = torch.randn(16, 3, 32, 32, generator=g) * (1 + k), torch.arange(16) % 2
        push_embedding(hub, repo, embed(TensorTask(x, y, {"dataset_id": f"task-{k}"}), PROBE, input_size=32))
        if arch is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(k)
                model = timm.create_model(arch, num_classes=5)
            timm.models.save_for_hf(model, str(hub.root / repo), safe_serialization=True)
    return {"hub": hub, "data": _images(root / "data"), "root": root}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return make_zoo(tmp_path_factory.mktemp("two_stage"))


def test_rerank_orders_the_shortlist_by_the_experts_own_features(zoo: dict[str, Any], monkeypatch) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(zoo["root"] / "cache"))
    result = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=3, rerank="logme", shortlist=3)
    via_automl = t2v_hub.rank_backbones(str(zoo["data"]), hub=zoo["hub"], top_k=3, rerank="logme", shortlist=3)
    assert [r.repo_id for r in via_automl] == [r.repo_id for r in result.recommendations]
    recs = result.recommendations
    assert sorted(r.stage1_rank for r in recs) == [1, 2, 3] and [r.rank for r in recs] == [1, 2, 3]
    scored = [r for r in recs if r.ordered_by == "logme"]
    unscored = [r for r in recs if r.ordered_by == "task2vec"]
    assert {r.repo_id for r in scored} == {"org/expert-0", "org/expert-1"}
    # The expert without weights keeps its stage-1 place and is named in a note.
    assert [r.repo_id for r in unscored] == ["org/expert-2"] and unscored[0].rank == unscored[0].stage1_rank
    assert any("org/expert-2" in n and "no timm weights" in n for n in result.notes)
    # Scored experts are ordered by their score, which is what `score` computes for the same names.
    ranked = sorted(scored, key=lambda r: r.rank)
    assert ranked[0].transfer_score >= ranked[1].transfer_score
    direct = {s.name: s.score for s in score_models(str(zoo["data"]), [r.name for r in scored])}
    for r in scored:
        assert r.transfer_score == pytest.approx(direct[r.name], rel=1e-6)
    assert result.cost["forward_passes"] == 2 * 24 and result.cost["models_scored"] == 2
    # The AutoML snippet: every name is something timm builds, with the repo's own weights.
    model = timm.create_model(ranked[0].name, pretrained=True)
    assert model.num_classes == 5
    # --rerank none is stage 1 alone, in stage-1 order.
    plain = t2v_hub.recommend(str(zoo["data"]), hub=zoo["hub"], top_k=3).recommendations
    assert [r.repo_id for r in plain] == [r.repo_id for r in sorted(recs, key=lambda r: r.stage1_rank)]
    assert all(r.ordered_by == "task2vec" and r.transfer_score is None for r in plain)


def test_cli_recommend_rerank_table_and_json(zoo: dict[str, Any], monkeypatch, capsys) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(zoo["root"] / "cache"))
    args = ["recommend", "--dataset", str(zoo["data"]), "--hub", str(zoo["hub"].root), "--rerank", "knn",
            "--shortlist", "2", "--top-k", "3"]
    assert main([*args, "--format", "json"]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)
    assert out["cost"]["shortlist"] == 2 and out["cost"]["rerank"] == "knn"
    assert [r["ordered_by"] for r in out["recommendations"]][2] == "task2vec"  # below the shortlist
    assert main(args) == 0
    cap = capsys.readouterr()
    assert cap.out.splitlines()[0].split()[:5] == ["rank", "model", "d_asym", "score", "knn"]
    assert "stage 2:" in cap.err


def test_bad_two_stage_inputs(zoo: dict[str, Any], tmp_path: Path, capsys) -> None:
    hub = ["--hub", str(zoo["hub"].root)]
    for bad in (["--shortlist", "0"], ["--rerank", "leep"]):
        assert main(["recommend", "--dataset", str(zoo["data"]), *hub, "--rerank", "logme", *bad]) == 2
        assert "error:" in capsys.readouterr().err
    emb_file = tmp_path / "e.safetensors"
    embed(TensorTask(torch.randn(8, 3, 32, 32), torch.arange(8) % 2), PROBE, input_size=32).save(emb_file)
    with pytest.raises(RecommendError, match="needs the dataset's images"):
        t2v_hub.recommend(str(emb_file) and t2v_hub.Task2VecEmbedding.load(emb_file), hub=zoo["hub"], rerank="logme")


def test_score_command_and_its_bad_inputs(zoo: dict[str, Any], tmp_path: Path, capsys) -> None:
    base = ["score", "--dataset", str(zoo["data"]), "--quiet"]
    assert main([*base, "--models", "test_resnet", "test_vit", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["rank"] for s in out["scores"]] == [1, 2] and out["forward_passes"] == 48
    assert out["scores"][0]["score"] >= out["scores"][1]["score"] and out["higher_is_better"] is True
    assert main([*base, "--models", "no_such_model_xyz"]) == 2
    assert "not a timm model name" in capsys.readouterr().err
    assert main([*base, "--models", "test_resnet", "--metric", "bogus"]) == 2
    assert main([*base, "--models", f"local-dir:{tmp_path}"]) == 2
    assert "holds no timm weights" in capsys.readouterr().err
    import huggingface_hub

    from t2v_hub import network

    with pytest.MonkeyPatch.context() as mp:  # an uncached hf-hub model, no network: seconds, not retries
        mp.delenv("HF_HUB_OFFLINE", raising=False)
        mp.setattr(network, "unreachable", lambda *a, **k: "gaierror: no network")
        mp.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
        mp.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm started its retries"))
        assert main([*base, "--models", "hf-hub:org/absent"]) == 2
        assert "cannot reach" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    for spec, expected in ((f"local-dir:{tmp_path}/absent", "absent does not exist"),
                           (f"local-dir:{tmp_path}/afile", "afile is a file, not a folder"),
                           ("local-dir:", "names no folder")):
        assert main([*base, "--models", spec]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    with pytest.raises(ModelLoadError, match="no classifier head"):
        load_model("test_resnet", pretrained=False) if False else _headless()
    with pytest.raises(ModelLoadError, match="above max_model_mb"):
        load_model("test_resnet", max_model_mb=1e-6)
    x, y = torch.randn(10, 3, 32, 32), torch.randn(10)
    with pytest.raises(TransferabilityError, match="single-label classification only"):
        score_models(TensorTask(x, y, label_kind="regression"), ["test_resnet"], metric="hscore")
    assert score_models(TensorTask(x, y, label_kind="regression"), ["test_resnet"], metric="logme")[0].score < 10


def _headless() -> None:
    import t2v_hub.selection.features as F

    real = timm.create_model
    try:
        timm.create_model = lambda name, **kw: real(name, num_classes=0, **kw)  # type: ignore[assignment]
        F.load_model("test_resnet")
    finally:
        timm.create_model = real  # type: ignore[assignment]
