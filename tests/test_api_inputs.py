"""The Python API refuses inputs of the wrong kind with the parameter named, before any work.

The class: anything a caller can pass that the pipeline would otherwise meet deep inside torch or
timm (an AttributeError, a dtype RuntimeError) or, worse, ignore.
"""

from __future__ import annotations

import pytest
import torch

import t2v_hub
from t2v_hub.errors import DataError, FisherError, ProbeError, RecommendError
from t2v_hub.task2vec import TensorTask

X = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
Y = torch.tensor([0, 1] * 4)


def _embed(task, probe="test_efficientnet", method="montecarlo", **kw):
    return t2v_hub.embed(task, probe, method, input_size=32, cache=False, quiet=True, **kw)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: TensorTask(X * float("nan"), Y), "images contain NaN or Inf"),
    (lambda: TensorTask(torch.rand(8, 10), Y), r"images must be a float tensor \(N, C, H, W\).*shape \(8, 10\)"),
    (lambda: TensorTask((X * 255).to(torch.uint8), Y), "images must be a float tensor.*torch.uint8"),
    (lambda: TensorTask(X, Y.float() + 0.5), "labels are torch.float32: pass int64 class ids, or label_kind='regression'"),
    (lambda: TensorTask(X, Y - 1), "labels hold -1: class ids are 0..C-1"),
    (lambda: TensorTask(X, torch.full((8, 3), 2)), "multi-label targets .* must be 0/1"),
    (lambda: TensorTask(X, Y[:, None, None]), r"labels must be \(N,\) class ids"),
    (lambda: TensorTask(X.numpy(), Y), "images and labels must be torch tensors, got ndarray"),
    (lambda: TensorTask(X, Y.long(), label_kind="regression"), "regression labels must be float"),
])
def test_tensor_tasks_of_the_wrong_kind_are_refused(make, match) -> None:
    with pytest.raises(DataError, match=match):
        make()


def test_tensor_tasks_that_are_right_still_embed() -> None:
    e = _embed(TensorTask(X, Y))
    assert e.dim > 0 and bool(torch.isfinite(e.vector).all())
    multi = TensorTask(X, torch.tensor([[1, 0], [0, 1]] * 4, dtype=torch.float32))
    assert multi.label_kind == "multi"


def test_grayscale_tensors_are_refused_with_the_conversion() -> None:
    with pytest.raises(DataError, match=r"images have 1 channel\(s\), the probe test_efficientnet takes 3.*expand"):
        _embed(TensorTask(torch.rand(8, 1, 32, 32), Y))


@pytest.mark.parametrize("probe", [None, 5, 3.0])
def test_a_probe_that_is_no_model_is_named(probe) -> None:
    with pytest.raises(ProbeError, match=rf"probe={probe!r}: expected a timm model name"):
        _embed(TensorTask(X, Y), probe=probe)


def test_loader_options_for_tensors_are_refused() -> None:
    with pytest.raises(DataError, match="split= only apply to datasets that are loaded"):
        _embed(TensorTask(X, Y), split="train")
    with pytest.raises(DataError, match="bogus="):
        _embed((X, Y), bogus=1)


@pytest.mark.parametrize(("method", "options", "match"), [
    ("montecarlo", {"steps": 3}, r"fisher_options \['steps'\] are not options of method='montecarlo'"),
    ("empirical", {"nonsense": 1}, r"\['nonsense'\] are not options of method='empirical'"),
    ("batch", {"steps": 1}, r"\['steps'\] are not options of method='batch'"),
    ("variational", {"bogus": 1}, r"\['bogus'\] are not options of method='variational'"),
    ("variational", {"likelihood": "gaussian"}, "the likelihood follows the labels"),
])
def test_unknown_fisher_options_are_refused_before_any_work(monkeypatch, method, options, match) -> None:
    import t2v_hub.task2vec as pipeline

    def no_work(*a, **k):
        raise AssertionError("the dataset was read before the options were checked")

    monkeypatch.setattr(pipeline, "as_task", no_work)
    with pytest.raises(FisherError, match=match):
        _embed(TensorTask(X, Y), method=method, fisher_options=options)


def test_the_variational_options_that_exist_are_accepted(monkeypatch) -> None:
    from t2v_hub.task2vec import _check_fisher_options

    _check_fisher_options("variational", {"steps": 2, "init": "laplace", "optimizer": "adam", "beta": 1e-7})
    _check_fisher_options("montecarlo", {"filter_means": False, "conv_backend": "unfold"})


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"hub": 42}, r"hub=42: expected 'hf', a URL, a local folder or a hub object"),
    ({"top_k": "5"}, r"top_k='5': expected a whole number of at least 1"),
    ({"top_k": 0}, r"top_k=0"),
    ({"alpha": 2.0}, r"alpha=2.0: expected a number in \[0, 1\]"),
    ({"alpha": float("nan")}, r"alpha=nan"),
    ({"alpha": "0.1"}, r"alpha='0.1'"),
    ({"rerank": "logme", "shortlist": 0}, r"shortlist=0"),
    ({"candidates": ["org/a", 5]}, r"candidates holds 5: expected repo ids as non-empty strings"),
    ({"filter": [None]}, r"filter holds None: expected tags"),
    ({"filter": ["vision", " "]}, r"filter holds ' '"),
    ({"trivial": 3.5}, r"trivial=float: expected a Task2VecEmbedding, a tensor or an embedding file"),
    ({"trivial": torch.full((4,), float("nan"))}, r"trivial holds NaN or Inf"),
    ({"index": 5}, r"index=int: expected an index folder"),
])
def test_recommend_names_the_parameter(tmp_path, kwargs, match) -> None:
    with pytest.raises(RecommendError, match=match):
        t2v_hub.recommend(TensorTask(X, Y), **{"hub": str(tmp_path), **kwargs})


def test_recommend_takes_one_tag_as_a_string(local_hub, make_embedding, monkeypatch) -> None:
    from t2v_hub.hub import push_embedding
    from t2v_hub.selection import recommend as recommend_mod

    for i, tag in enumerate(("vision", "audio")):
        local_hub.create_repo(f"org/e{i}")
        push_embedding(local_hub, f"org/e{i}", make_embedding(i))
        card = local_hub.root / "org" / f"e{i}" / "README.md"
        assert "tags:\n" in card.read_text()
        card.write_text(card.read_text().replace("tags:\n", f"tags:\n- {tag}\n", 1))
    target = make_embedding(5)
    one = recommend_mod.recommend(target, hub=local_hub, filter="vision", trivial=make_embedding(9))
    listed = recommend_mod.recommend(target, hub=local_hub, filter=["vision"], trivial=make_embedding(9))
    assert [r.repo_id for r in one.recommendations] == [r.repo_id for r in listed.recommendations] == ["org/e0"]


def test_one_model_or_candidate_as_a_string_is_one_not_its_characters(monkeypatch) -> None:
    from t2v_hub.selection import features

    seen = []
    monkeypatch.setattr(features, "score_model", lambda name, *a, **k: seen.append(name) or features.ModelScore(
        rank=0, name=name, metric="logme", score=1.0, seconds=0.0, forward_passes=8, input_size=[3, 32, 32],
        feature_dim=4))
    rows = t2v_hub.score_models(TensorTask(X, Y), "resnet18")
    assert seen == ["resnet18"] and [r.name for r in rows] == ["resnet18"]


@pytest.mark.parametrize("mb", [-1, 0, float("nan"), "10"])
def test_max_model_mb_is_checked_before_any_model_is_fetched(tmp_path, monkeypatch, mb) -> None:
    from t2v_hub.selection import features
    from t2v_hub.selection.features import ModelLoadError

    monkeypatch.setattr(features, "score_model", lambda *a, **k: pytest.fail("a model was fetched"))
    with pytest.raises(ModelLoadError, match=rf"max_model_mb={mb!r}: expected a positive size"):
        t2v_hub.score_models(TensorTask(X, Y), ["resnet18"], max_model_mb=mb)
    with pytest.raises(ModelLoadError, match="max_model_mb="):
        t2v_hub.recommend(TensorTask(X, Y), hub=str(tmp_path), rerank="logme", max_model_mb=mb)


def test_selector_and_metric_inputs_of_the_wrong_kind() -> None:
    from t2v_hub.errors import SelectorError

    with pytest.raises(SelectorError, match="selector=5: expected a selector file"):
        t2v_hub.load_selector(5)
    with pytest.raises(SelectorError, match=r"errors \(3, 2\), scores \(2, 2\) must have the same"):
        t2v_hub.evaluate_selection(torch.rand(3, 2), torch.rand(2, 2))


def test_recommend_reads_a_trivial_embedding_file(local_hub, make_embedding, tmp_path) -> None:
    from t2v_hub.hub import push_embedding

    local_hub.create_repo("org/e0")
    push_embedding(local_hub, "org/e0", make_embedding(0))
    t0 = make_embedding(9)
    path = t0.save(tmp_path / "t0.safetensors")
    by_file = t2v_hub.recommend(make_embedding(5), hub=local_hub, trivial=str(path)).recommendations
    by_object = t2v_hub.recommend(make_embedding(5), hub=local_hub, trivial=t0).recommendations
    assert [r.score for r in by_file] == [r.score for r in by_object]


@pytest.mark.parametrize(("vector", "metadata", "match"), [
    (torch.ones(3, 4), {}, r"vector has shape \(3, 4\): expected one entry per probe filter"),
    ("abc", {}, r"vector=str: expected a 1-D tensor"),
    (torch.ones(4), ["probe"], r"metadata=list: expected a dict"),
])
def test_embeddings_of_the_wrong_shape_or_kind_are_refused(vector, metadata, match) -> None:
    from t2v_hub.errors import EmbeddingError

    with pytest.raises(EmbeddingError, match=match):
        t2v_hub.Task2VecEmbedding(vector, metadata)


def test_embedding_accepts_a_batch_row_and_no_metadata(tmp_path) -> None:
    from t2v_hub.errors import OutputError

    e = t2v_hub.Task2VecEmbedding(torch.ones(1, 4), None)
    assert e.dim == 4 and e.metadata["dim"] == "4"
    with pytest.raises(OutputError, match="it is a folder"):
        e.save(tmp_path)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"include_norm": "no"}, r"include_norm='no': expected True or False"),  # truthy: it meant the opposite
    ({"cache": "yes"}, r"cache='yes': expected True or False"),
    ({"quiet": 1}, r"quiet=1: expected True or False"),
    ({"pretrained": "false"}, r"pretrained='false': expected True or False \(or None\)"),
    ({"head": 5}, r"head=int: expected a t2v_hub.config.HeadConfig or None"),
])
def test_embed_switches_must_be_bools(kwargs, match) -> None:
    from t2v_hub.errors import T2VError

    with pytest.raises(T2VError, match=match):
        t2v_hub.embed(TensorTask(X, Y), "test_efficientnet", **{"input_size": 32, **kwargs})


@pytest.mark.parametrize(("models", "match"), [(5, r"models=5: expected model names"),
                                               (["test_resnet", 3], r"models holds 3"),
                                               ([""], r"models holds ''")])
def test_score_models_names_bad_model_lists(models, match) -> None:
    from t2v_hub.selection.transferability import TransferabilityError

    with pytest.raises(TransferabilityError, match=match):
        t2v_hub.score_models(TensorTask(X, Y), models)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"alpha": 2.0}, r"alpha=2.0: expected a finite number in \[0, 1\]"),
    ({"alpha": float("nan")}, r"alpha=nan"),
    ({"lr": float("inf")}, r"lr=inf: expected a finite number above 0"),
    ({"epochs": 1.5}, r"epochs=1.5: expected a whole number"),
    ({"weight_decay": -1.0}, r"weight_decay=-1.0: expected a finite number at least 0"),
])
def test_selector_config_names_bad_settings(kwargs, match) -> None:
    from t2v_hub.errors import SelectorError

    with pytest.raises(SelectorError, match=match):
        t2v_hub.SelectorConfig(**kwargs)


@pytest.mark.parametrize(("change", "match"), [
    ({"errors": -torch.ones(2, 3)}, r"errors must be finite and >= 0"),
    ({"errors": torch.full((2, 3), float("inf"))}, r"errors must be finite and >= 0"),
    ({"tasks": -torch.rand(2, 4)}, r"tasks holds negative, NaN or Inf entries"),
    ({"experts": "abc"}, r"experts=str: expected a tensor of numbers"),
    ({"expert_ids": ["a"]}, r"expert_ids: expected 3 distinct ids"),
    ({"expert_ids": ["a", "a", "b"]}, r"expert_ids: expected 3 distinct ids .*2 distinct"),
])
def test_train_model2vec_names_unusable_inputs(change, match) -> None:
    from t2v_hub.errors import SelectorError

    args = {"tasks": torch.rand(2, 4), "experts": torch.rand(3, 4), "errors": torch.rand(2, 3),
            "trivial": torch.rand(4), "config": t2v_hub.SelectorConfig(bias="none", epochs=2), **change}
    with pytest.raises(SelectorError, match=match):
        t2v_hub.train_model2vec(**args)


def test_train_model2vec_takes_nested_lists_as_tensors() -> None:
    sel = t2v_hub.train_model2vec([[0.5] * 4] * 2, torch.rand(3, 4), [[0.1, 0.2, 0.3]] * 2, [0.1] * 4,
                                  t2v_hub.SelectorConfig(bias="none", epochs=2))
    assert len(sel.expert_ids) == 3 and sel.generalist is not None


def test_a_loaded_task_embeds_as_its_dataset_does(tmp_path) -> None:
    """load_task's result (inspected first, as users do) is a dataset embed accepts; loading options
    that can no longer apply are refused with the fix."""
    from conftest import write_imagefolder

    from t2v_hub.data import load_task

    folder = write_imagefolder(tmp_path, ["a", "b"], 4, (20, 24))
    task = load_task(folder)
    assert torch.equal(_embed(task).vector, _embed(folder).vector)
    assert _embed(task, max_samples=100).dim > 0  # no smaller than the task: nothing to drop
    with pytest.raises(DataError, match=r"max_samples=4 cannot shrink a task loaded with 8 samples.*load_task"):
        _embed(task, max_samples=4)
    with pytest.raises(DataError, match=r"split= apply when a dataset is loaded.*pass them to load_task"):
        _embed(task, split="test")


def test_the_features_pass_takes_the_fisher_pass_autocast() -> None:
    """`--mixed-precision` autocasts both forward passes: the head is fitted on features of the same
    numerics as the pass that measures it."""
    from t2v_hub.run import batched_outputs

    seen: list[torch.dtype] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.linear(x.flatten(1), torch.ones(2, x[0].numel()))
        seen.append(y.dtype)
        return y

    out = batched_outputs(fn, X, 4, torch.device("cpu"), autocast_dtype=torch.bfloat16)
    assert seen == [torch.bfloat16] * 2 and out.dtype == torch.float32  # results still fp32 on the CPU
    seen.clear()
    batched_outputs(fn, X, 4, torch.device("cpu"))
    assert seen == [torch.float32] * 2


@pytest.mark.parametrize(("kw", "match"), [
    ({"checkpoint": 2.5}, r"checkpoint=2.5: expected the path of a .safetensors/.pth file"),
    ({"checkpoint": ["w.pth"]}, r"checkpoint=\['w.pth'\]: expected the path"),
    ({"stats": [1]}, "stats=list: expected a dict to fill in"),
    ({"autocast_dtype": "fp8"}, r"autocast_dtype must be one of .*got 'fp8'"),
    ({"autocast_dtype": torch.float32}, "autocast_dtype must be bfloat16 or float16"),
])
def test_embed_names_arguments_of_the_wrong_kind(kw, match) -> None:
    """These ended in a TypeError from os.stat, dict.update or torch.autocast, some after the probe was built."""
    from t2v_hub.errors import T2VError

    with pytest.raises(T2VError, match=match):
        _embed(TensorTask(X, Y), **kw)


def test_embed_takes_the_autocast_names_fisher_estimate_takes() -> None:
    stats: dict = {}
    e = _embed(TensorTask(X, Y), autocast_dtype="bf16", stats=stats)
    assert bool(torch.isfinite(e.vector).all()) and stats["num_samples"] == 8


ZOO_EMB = "examples/zoo/t2v-zoo/mnist10/task2vec/tf_efficientnet_lite0.safetensors"


@pytest.mark.parametrize(("call", "match"), [
    # Each of these ended in a TypeError or RuntimeError from deep inside, or was accepted.
    (lambda: t2v_hub.recommend(t2v_hub.Task2VecEmbedding.load(ZOO_EMB), hub="examples/zoo", probe=5),
     "probe=5: expected a timm model name"),
    (lambda: t2v_hub.recommend(t2v_hub.Task2VecEmbedding.load(ZOO_EMB), hub="examples/zoo", method=["batch"]),
     r"method=\['batch'\]: expected a Fisher method name"),
    (lambda: t2v_hub.score_models(TensorTask(X, Y), ["test_resnet"], metric=["logme"]), r"unknown metric \['logme'\]"),
    (lambda: t2v_hub.score_models(TensorTask(X, Y), ["test_resnet"], max_samples=2.5), "max_samples=2.5"),
    (lambda: t2v_hub.score_models(TensorTask(X, Y), ["test_resnet"], seed="abc"), "seed='abc'"),
    (lambda: t2v_hub.trivial_embedding("test_efficientnet", input_size=32, num_samples=8, seed=2.5), "seed=2.5"),
    (lambda: t2v_hub.trivial_embedding("test_efficientnet", input_size=32, checkpoint=2.5), "checkpoint=2.5"),
    (lambda: t2v_hub.trivial_embedding("test_efficientnet", input_size=32, cache="no"), "cache='no'"),
    (lambda: t2v_hub.trivial_embedding("test_efficientnet", "fisher", input_size=32), "unknown method 'fisher'"),
])
def test_the_other_entry_points_name_arguments_of_the_wrong_kind(call, match, monkeypatch, tmp_path) -> None:
    from pathlib import Path

    from t2v_hub.errors import T2VError

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path))
    with pytest.raises(T2VError, match=match):
        call()


_XS, _FS, _ES, _T0 = torch.rand(6, 10) + 0.1, torch.rand(3, 10) + 0.1, torch.rand(6, 3), torch.rand(10) + 0.1


@pytest.mark.parametrize(("call", "match"), [
    (lambda: t2v_hub.create_probe("test_efficientnet", 2, checkpoint_path=2.5), "checkpoint_path=2.5: expected the path"),
    (lambda: t2v_hub.create_probe("test_efficientnet", 2, include_norm="no"), "include_norm='no'"),
    (lambda: t2v_hub.create_probe("test_efficientnet", 2, device=[1]), r"device=\[1\] is not a torch device"),
    (lambda: t2v_hub.train_model2vec(_XS, _FS, _ES, _T0, "layer"), "config='layer': expected a t2v_hub.SelectorConfig"),
    (lambda: t2v_hub.train_model2vec(_XS, _FS, _ES, _T0, expert_ids=3), "expert_ids=3: expected a list of id strings"),
    (lambda: t2v_hub.train_model2vec(_XS, _FS, _ES, _T0, task_ids="abcdef"), "task_ids='abcdef'"),
    (lambda: t2v_hub.train_model2vec(_XS, _FS, _ES, _T0, compat=[1]), r"compat=\[1\]: expected a dict"),
    (lambda: t2v_hub.loo_model2vec(_XS, _FS, _ES, _T0, progress="yes"), "progress='yes'"),
    (lambda: t2v_hub.rank_backbones(t2v_hub.Task2VecEmbedding.load(ZOO_EMB), hub="examples/zoo", notes="log"),
     "notes=str: expected a list"),
])
def test_probes_selectors_and_automl_name_arguments_of_the_wrong_kind(call, match, monkeypatch) -> None:
    """AttributeErrors ('str' object has no attribute 'alpha_soft' / 'extend'), os.stat's and torch's TypeErrors,
    or a truthy string taken as a switch."""
    from pathlib import Path

    from t2v_hub.errors import T2VError

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    with pytest.raises(T2VError, match=match):
        call()


@pytest.mark.parametrize(("kw", "match"), [
    ({"dry_run": 0}, "dry_run=0"),  # falsy: it would have committed
    ({"create_pr": "no"}, "create_pr='no'"),
    ({"nearest": "abc"}, "nearest='abc': expected .repo_id, distance. pairs"),
    ({"nearest": [("org/a", float("nan"))]}, "with finite distances"),
    ({"retries": 2.5}, "retries=2.5"),
    ({"backoff": -1}, "backoff=-1"),
    ({"license": ["mit"]}, r"license=\['mit'\]: expected a str"),
])
def test_push_embedding_names_arguments_of_the_wrong_kind_before_writing(kw, match, tmp_path) -> None:
    import shutil
    from pathlib import Path

    from t2v_hub.errors import HubError
    from t2v_hub.hub import get_hub, push_embedding

    root = Path(__file__).resolve().parent.parent
    shutil.copytree(root / "examples" / "zoo" / "t2v-zoo" / "mnist10", tmp_path / "zoo" / "t2v-zoo" / "mnist10")
    before = {p: p.read_bytes() for p in (tmp_path / "zoo").rglob("*") if p.is_file()}
    hub = get_hub(str(tmp_path / "zoo"))
    emb = t2v_hub.Task2VecEmbedding.load(root / ZOO_EMB)
    with pytest.raises(HubError, match=match):
        push_embedding(hub, "t2v-zoo/mnist10", emb, **{"dry_run": True, **kw})
    assert {p: p.read_bytes() for p in (tmp_path / "zoo").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("kw", "match"), [
    ({"probe": 5}, "probe=5: expected a timm model name"),
    ({"method": ["batch"]}, r"method=\['batch'\]"),
    ({"compatible_with": "e.safetensors"}, "compatible_with=str: expected a Task2VecEmbedding"),
    ({"progress": "yes"}, "progress='yes'"),
    ({"filter": 3}, "filter=3: expected tags"),
])
def test_list_experts_names_arguments_of_the_wrong_kind(kw, match) -> None:
    from pathlib import Path

    from t2v_hub.errors import HubError
    from t2v_hub.hub import get_hub, list_experts

    with pytest.raises(HubError, match=match):
        list_experts(get_hub(str(Path(__file__).resolve().parent.parent / "examples" / "zoo")), **kw)


def test_list_experts_takes_one_tag_as_a_str() -> None:
    """`filter="t2v-zoo"` was read as the tags t, 2, v, -, z, o: no expert matched."""
    from pathlib import Path

    from t2v_hub.hub import get_hub, list_experts

    hub = get_hub(str(Path(__file__).resolve().parent.parent / "examples" / "zoo"))
    ids = [e.repo_id for e in list_experts(hub, filter="t2v-zoo")[0]]
    assert len(ids) == 12 and ids == [e.repo_id for e in list_experts(hub, filter=["t2v-zoo"])[0]]


@pytest.mark.parametrize(("call", "match", "error"), [
    (lambda: t2v_hub.data.load_task("examples/data/fashion_tops4", streaming="no"), "streaming='no'", DataError),
    (lambda: t2v_hub.data.load_task("examples/data/fashion_tops4", image_column=["image"]), r"image_column=\['image'\]",
     DataError),
    (lambda: t2v_hub.data.load_task("examples/data/fashion_tops4", max_samples=2.5), "max_samples=2.5", DataError),
    (lambda: t2v_hub.data.load_task("examples/data/fashion_tops4", seed=2.5), "seed=2.5", DataError),  # was truncated
    (lambda: t2v_hub.fisher.estimate(torch.nn.Linear(3, 2), [(torch.rand(2, 3), torch.tensor([0, 1]))], params=3),
     "params=3: expected a list of parameter names", FisherError),
    (lambda: t2v_hub.fisher.estimate(torch.nn.Linear(3, 2), [(torch.rand(2, 3), torch.tensor([0, 1]))], generator=7),
     "generator=7: expected a torch.Generator", FisherError),
    (lambda: t2v_hub.distances.cdist(torch.rand(2, 5), torch.rand(3, 5), weights=2.0), r"weights=float\(\): expected a "
     r"tensor of shape \(5,\)", ValueError),
])
def test_data_fisher_and_distances_name_arguments_of_the_wrong_kind(call, match, error, monkeypatch) -> None:
    from importlib import import_module
    from pathlib import Path

    for sub in ("data", "distances", "fisher"):  # the lambdas reach them as attributes of t2v_hub
        import_module(f"t2v_hub.{sub}")
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    with pytest.raises(error, match=match):
        call()


def _zoo_experts():
    from pathlib import Path

    from t2v_hub.hub import get_hub, list_experts

    return list_experts(get_hub(str(Path(__file__).resolve().parent.parent / "examples" / "zoo")))[0]


@pytest.mark.parametrize(("call", "match"), [
    (lambda E, ex: t2v_hub.rank_experts(E, ex, alpha="abc"), "alpha='abc': expected a number in"),
    (lambda E, ex: t2v_hub.rank_experts(E, ex, selector="sel.safetensors"), "selector='sel.safetensors': expected a Model2Vec"),
    (lambda E, ex: t2v_hub.rank_experts(E, ex, trivial="t0"), "trivial='t0'"),
    (lambda E, ex: t2v_hub.rank_experts(E, ex, top_k=2.5), "top_k=2.5"),
    (lambda E, ex: t2v_hub.rank_experts(E, ex, include=[1]), "include holds 1"),
    (lambda E, ex: t2v_hub.rank_experts("e.safetensors", ex), "target=str: expected a Task2VecEmbedding"),
    (lambda E, ex: __import__("t2v_hub.selection.index_write", fromlist=["x"]).build_index(
        __import__("t2v_hub.hub", fromlist=["x"]).get_hub(str(Path_("examples/zoo"))), "idx"), "experts=LocalHub: expected the list"),
    (lambda E, ex: __import__("t2v_hub.selection.index_write", fromlist=["x"]).build_index(ex, "idx", overwrite="no"),
     "overwrite='no'"),
    (lambda E, ex: __import__("t2v_hub.selection.index_write", fromlist=["x"]).build_index(ex, "idx", dtype=["float32"]),
     r"index dtype must be one of float32, bfloat16, got \['float32'\]"),
    (lambda E, ex: t2v_hub.evaluate_selection(torch.rand(3, 2), torch.rand(3, 2), exclude=[[True]]),
     "exclude=list: expected a .tasks, experts. tensor"),
])
def test_ranking_index_and_metrics_name_arguments_of_the_wrong_kind(call, match, monkeypatch, tmp_path) -> None:
    """AttributeErrors ('str' object has no attribute 'check_compatible' / 'shape'), float() and topk()
    TypeErrors, "'LocalHub' object is not subscriptable", or overwrite="no" taken as yes."""
    from t2v_hub.errors import T2VError

    experts = _zoo_experts()
    emb = t2v_hub.Task2VecEmbedding.load(Path_(ZOO_EMB))
    monkeypatch.chdir(tmp_path)  # the old code wrote the index here
    with pytest.raises(T2VError, match=match):
        call(emb, experts)
    assert not list(tmp_path.iterdir())


def test_rank_experts_takes_one_repo_id_as_a_str_for_include() -> None:
    emb = t2v_hub.Task2VecEmbedding.load(Path_(ZOO_EMB))
    recs = t2v_hub.rank_experts(emb, _zoo_experts(), top_k=1, include="t2v-zoo/fashion10")
    assert [r.repo_id for r in recs][-1] == "t2v-zoo/fashion10" and len(recs) == 2


def Path_(rel: str):  # noqa: N802
    from pathlib import Path

    return Path(__file__).resolve().parent.parent / rel


@pytest.mark.parametrize(("call", "match"), [
    (lambda: t2v_hub.Task2VecEmbedding.load(2.5), "path=2.5: expected the path of a .safetensors file"),
    (lambda: t2v_hub.Model2Vec.load(2.5), "path=2.5: expected the path of a selector file"),
    (lambda: t2v_hub.Task2VecEmbedding.load(Path_(ZOO_EMB)).save(2.5), "path=2.5: expected a file path to write to"),
])
def test_artifact_paths_of_the_wrong_kind_are_named(call, match) -> None:
    """These were Path()'s TypeError ("expected str, bytes or os.PathLike object, not float")."""
    from t2v_hub.errors import T2VError

    with pytest.raises(T2VError, match=match):
        call()
