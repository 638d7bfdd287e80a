"""Error matrices read from the experts' own evaluation results (.eval_results/*.yaml, model-index)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import SelectorError
from t2v_hub.hub import push_embedding
from t2v_hub.selection.eval_results import eval_results_yaml, read_eval_results

MODEL_INDEX_CARD = """---
tags: [vision]
model-index:
- name: m2
  results:
  - task: {type: image-classification}
    dataset: {name: Task 1, type: task-1}
    metrics:
    - {type: accuracy, value: 0.75}
    - {type: f1, value: 0.5}
---
# m2
"""


def _zoo(hub, make_embedding) -> dict[str, dict[str, float]]:
    """Three experts: two report accuracies (percent) in .eval_results, one in its card's model-index."""
    acc = {"org/m0": {"task-0": 90.0, "task-1": 60.0}, "org/m1": {"task-0": 80.0, "task-1": 70.0, "task-2": 50.0}}
    for j, repo in enumerate(["org/m0", "org/m1", "org/m2"]):
        hub.create_repo(repo)
        if repo == "org/m2":
            hub.commit(repo, {"README.md": MODEL_INDEX_CARD.encode()}, "card", parent_commit=None)
        push_embedding(hub, repo, make_embedding(j))
        if repo in acc:
            hub.commit(repo, {".eval_results/zoo.yaml": eval_results_yaml(acc[repo])}, "eval", parent_commit=None)
    return acc


def _check(report) -> None:
    em = report.matrix
    assert em.task_ids == ["task-0", "task-1", "task-2"] and em.expert_ids == ["org/m0", "org/m1", "org/m2"]
    want = [[0.1, 0.2, math.nan], [0.4, 0.3, 0.25], [math.nan, 0.5, math.nan]]
    torch.testing.assert_close(em.errors, torch.tensor(want), equal_nan=True)
    assert report.sources == {".eval_results": 5, "model-index": 1} and report.skipped == []


def test_local_hub_eval_results_and_model_index(local_hub, make_embedding) -> None:
    _zoo(local_hub, make_embedding)
    _check(read_eval_results(local_hub, scale="auto"))
    # Explicit settings: values as errors in percent; only the listed experts.
    em = read_eval_results(local_hub, metric="error", scale="percent", experts=["org/m1"], model_index=False).matrix
    assert em.expert_ids == ["org/m1"] and em.errors[:, 0].tolist() == pytest.approx([0.8, 0.7, 0.5])


def test_through_the_http_server_one_listing_then_only_eval_files(hub_server, hf_hub, make_embedding) -> None:
    _zoo(hf_hub, make_embedding)
    hub_server.requests.clear()
    _check(read_eval_results(hf_hub))
    assert len(hub_server.calls("GET", "/api/models")) == 2  # one paginated listing (page size 2)
    assert hub_server.calls("GET", r"/api/models/.+") == []  # no request per repo
    fetched = {r.path for r in hub_server.calls("GET", r".*/resolve/.*")}
    assert fetched and all(p.endswith("/.eval_results/zoo.yaml") for p in fetched)


def test_hostile_and_broken_files_are_skipped_by_name(local_hub, make_embedding) -> None:
    _zoo(local_hub, make_embedding)
    local_hub.create_repo("org/evil")
    push_embedding(local_hub, "org/evil", make_embedding(7))
    local_hub.commit("org/evil", {
        ".eval_results/a.yaml": b"- !!python/object/apply:os.system ['echo pwned']\n",
        ".eval_results/b.yaml": b"- dataset: {id: task-0, task_id: default}\n  value: lots\n",
        ".eval_results/c.yaml": b"{not: a list}\n",
        ".eval_results/d.yaml": b"- dataset: {id: task-2, task_id: default}\n  value: 42\n",
        ".eval_results/e.yaml": b"- dataset: {id: task-1}\n  value: 40\n",
        ".eval_results/f.yaml": b"- 5\n",
    }, "bad", parent_commit=None)
    report = read_eval_results(local_hub)
    reasons = {why.split(":")[0] for repo, why in report.skipped if repo == "org/evil"}
    assert reasons == {f".eval_results/{c}.yaml" for c in "abcef"}
    said = dict((why.split(":")[0], why) for repo, why in report.skipped if repo == "org/evil")
    assert "entry 0 lacks dataset.task_id (each entry: dataset: {id, task_id}, value)" in said[".eval_results/e.yaml"]
    assert "entry 0 lacks dataset.id, dataset.task_id, value" in said[".eval_results/f.yaml"]
    col = report.matrix.expert_ids.index("org/evil")
    assert report.matrix.errors[report.matrix.task_ids.index("task-2"), col].item() == pytest.approx(0.58)


def test_conflicts_range_and_nothing_found_are_refused(local_hub, make_embedding) -> None:
    local_hub.create_repo("org/m0")
    push_embedding(local_hub, "org/m0", make_embedding(0))
    with pytest.raises(SelectorError, match="no evaluation results found"):
        read_eval_results(local_hub)
    local_hub.commit("org/m0", {
        ".eval_results/a.yaml": eval_results_yaml({"task-0": 0.9}, task_id="top1"),
        ".eval_results/b.yaml": eval_results_yaml({"task-0": 0.7}, task_id="top5"),
    }, "two tasks of one benchmark", parent_commit=None)
    with pytest.raises(SelectorError, match="two values for task-0.*task_id="):
        read_eval_results(local_hub)
    assert read_eval_results(local_hub, task_id="top5").matrix.errors.item() == pytest.approx(0.3)
    with pytest.raises(SelectorError, match="outside \\[0, 1\\]"):
        _out_of_range(local_hub)
    with pytest.raises(SelectorError, match="metric must be one of"):
        read_eval_results(local_hub, metric="f1")


def _out_of_range(hub):
    hub.commit("org/m0", {".eval_results/c.yaml": eval_results_yaml({"task-9": -5.0})}, "negative",
               parent_commit=None)
    return read_eval_results(hub, task_id="default")


def test_cli_selector_trains_from_eval_results(tmp_path: Path, local_hub, make_embedding, capsys) -> None:
    _zoo(local_hub, make_embedding)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for i in range(3):
        make_embedding(10 + i, dataset_id=f"task-{i}").save(tasks / f"t{i}.safetensors")
    make_embedding(99).save(tmp_path / "t0.safetensors")
    out = tmp_path / "sel.safetensors"
    args = ["selector", "train", "--eval-results", str(local_hub.root), "--tasks", str(tasks),
            "--trivial", str(tmp_path / "t0.safetensors"), "--bias", "filter", "--epochs", "5", "--out", str(out),
            "--format", "json"]
    assert main(args) == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out)
    assert summary["tasks"] == 3 and summary["experts"] == 3 and summary["skipped_cells"] == 3
    assert "read 3 dataset(s) x 3 expert(s)" in cap.err and "1 cells from model-index" in cap.err
    from t2v_hub.selection.model2vec import Model2Vec

    assert Model2Vec.load(out).expert_ids == ["org/m0", "org/m1", "org/m2"]
    # --errors and --eval-results are exclusive; one of them is required.
    assert main(["selector", "train", "--tasks", str(tasks)]) == 2  # one line on stderr, no SystemExit
    assert isinstance(Task2VecEmbedding.load(tasks / "t0.safetensors"), Task2VecEmbedding)


def test_demo_zoo_eval_results_match_the_reproduction_ground_truth(tmp_path: Path) -> None:
    import shutil

    from t2v_hub.hub import LocalHub

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "examples" / "zoo", tmp_path / "zoo")  # reading takes locks: not in the repo
    em = read_eval_results(LocalHub(tmp_path / "zoo")).matrix
    gt = json.loads((root / "benchmarks" / "results" / "reproduce_small.json").read_text())["error_matrix"]
    assert len(em.task_ids) == len(gt["tasks"]) == 36 and len(em.expert_ids) == 12
    for i, task in enumerate(gt["tasks"]):
        for j, expert in enumerate(gt["experts"][1:], start=1):  # column 0: the generic ImageNet model
            got = em.errors[em.task_ids.index(f"zoo/{task}"), em.expert_ids.index(f"t2v-zoo/{expert}")].item()
            assert got == pytest.approx(gt["errors"][i][j], abs=6e-5)  # accuracies stored to 0.01 %


def test_demo_selector_is_per_layer_and_puts_fashion_experts_first(tmp_path: Path, monkeypatch) -> None:
    """The shipped selector (benchmarks/zoo/demo_selector.py) ranks the sample task like its ground truth."""
    import shutil

    from t2v_hub.hub import LocalHub
    from t2v_hub.selection.model2vec import load_selector
    from t2v_hub.selection.recommend import recommend

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "examples" / "zoo", tmp_path / "zoo")  # reading takes locks: not in the repo
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    hub = LocalHub(tmp_path / "zoo")
    sel = load_selector("t2v-zoo/model2vec-selector", hub)
    assert sel.config.bias == "layer" and len(sel.expert_ids) == 12
    assert sel.info["num_tasks"] == 12 and min(sel.info["tasks_per_expert"].values()) == 11
    res = recommend(str(root / "examples" / "data" / "fashion_tops4"), hub=hub, selector=sel, top_k=4, quiet=True)
    top3 = [r.repo_id for r in res.recommendations[:3]]
    assert all(r.startswith("t2v-zoo/fashion") for r in top3), top3
    # The ground truth of this task (BENCHMARKS.md, demo zoo): fashion10 is the best expert.
    assert top3[0] == "t2v-zoo/fashion10"


def test_selector_train_exclude_self_leaves_out_each_experts_own_task(tmp_path: Path, monkeypatch, capsys) -> None:
    import shutil

    root = Path(__file__).resolve().parent.parent
    zoo = tmp_path / "zoo"
    shutil.copytree(root / "examples" / "zoo", zoo)
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    counts = {}
    for flag in ([], ["--exclude-self"]):
        capsys.readouterr()
        assert main(["selector", "train", "--eval-results", str(zoo), "--tasks", str(zoo), "--layer-epochs", "5",
                     "--out", str(tmp_path / "s.safetensors"), "--format", "json", *flag]) == 0
        counts[bool(flag)] = set(json.loads(capsys.readouterr().out)["tasks_per_expert"].values())
    assert counts == {False: {12}, True: {11}}
