"""Probes: names, layouts, weights, and the no-mutation guarantee."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from torch import nn

from t2v_hub.errors import ProbeError, UnknownProbeError, WeightsError
from t2v_hub.probes import (
    build_layout,
    create_probe,
    filter_parameter_names,
    get_probe_adapter,
    list_probe_adapters,
)
from t2v_hub.probes.weights import offline_weights_path


@pytest.mark.parametrize(("name", "dim"), [("resnet34", 8512), ("resnet18", 4800), ("tf_efficientnet_lite0", 21008)])
def test_layout_dimension_matches_paper(name: str, dim: int) -> None:
    # Building the layout on a random-init model is enough: dimension depends on architecture only.
    model = timm.create_model(name, pretrained=False)
    layout = build_layout(model)
    assert layout.dim == dim
    assert all(e.kind == "conv" for e in layout.entries)
    assert "fc.weight" not in layout.param_names and "classifier.weight" not in layout.param_names


def test_layout_with_norm_scales_resnet34() -> None:
    layout = build_layout(timm.create_model("resnet34", pretrained=False), include_norm=True)
    assert layout.dim == 17024  # FACTS: conv filters + BatchNorm gammas


def test_vit_layout_has_linear_layers_and_excludes_head() -> None:
    probe = create_probe("test_vit", 4)
    kinds = {e.kind for e in probe.layout.entries}
    assert kinds == {"conv", "linear"}
    assert "head.weight" not in probe.layout.param_names
    assert any(".qkv." in n for n in probe.layout.param_names)


def test_layout_hash_is_stable_and_order_sensitive() -> None:
    a = create_probe("test_resnet", 3).layout
    b = create_probe("test_resnet", 5).layout
    assert a.hash() == b.hash()  # head size does not change the embedding space
    c = create_probe("test_efficientnet", 3).layout
    assert a.hash() != c.hash()


def test_unknown_probe_lists_close_matches() -> None:
    with pytest.raises(UnknownProbeError, match="resnet34"):
        create_probe("resnet33", 3)


@pytest.mark.parametrize("name", ["hf-hub:a b/c", "hf-hub:", "hf_hub:org/", "hf-hub:a--b/c@main"])
def test_impossible_hf_hub_probe_ids_are_named_before_any_fetch(name, monkeypatch) -> None:
    import timm

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm was asked to fetch it"))
    with pytest.raises(UnknownProbeError, match="is not a valid Hub repo id"):
        create_probe(name, 2)


@pytest.mark.parametrize(("spec", "expected"), [("local-dir:", "names no folder"),
                                              ("local-dir:{tmp}/absent", "absent does not exist"),
                                              ("local-dir:{tmp}/afile", "afile is a file, not a folder"),
                                              ("local-dir:{tmp}", "has no config.json")])
def test_local_dir_probes_that_name_no_model_folder_say_what_is_wrong(tmp_path, spec, expected) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UnknownProbeError, match=expected):
        create_probe(spec.format(tmp=tmp_path), 2)


def test_an_uncached_hf_hub_probe_fails_fast_when_the_hub_is_unreachable(monkeypatch) -> None:
    import huggingface_hub
    import timm

    from t2v_hub import network

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(network, "unreachable", lambda *a, **k: "gaierror: no network")
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm started its retries"))
    with pytest.raises(WeightsError, match="cannot reach .* to download 'hf-hub:org/model' .*not in the local cache"):
        create_probe("hf-hub:org/model", 2)

    class Reached(Exception):
        pass

    def create(*_a, **_k):
        raise Reached

    # Cached: no fail-fast, the libraries fall back to the cache themselves.
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: "/cache/config.json")
    monkeypatch.setattr(timm, "create_model", create)
    with pytest.raises(Reached):
        create_probe("hf-hub:org/model", 2)


def test_uncached_timm_weights_fail_fast_when_the_hub_is_unreachable(monkeypatch) -> None:
    import huggingface_hub
    import timm

    from t2v_hub import network

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(network, "unreachable", lambda *a, **k: "gaierror: no network")
    asked: list[tuple[str, str]] = []

    def cache(repo, filename, **_k):
        asked.append((repo, filename))
        return None

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", cache)
    real_create = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm started its retries"))
    with pytest.raises(WeightsError, match="timm's pretrained weights for 'resnet18' .*not in the local cache"):
        create_probe("resnet18", 2, pretrained=True)
    assert ("timm/resnet18.a1_in1k", "model.safetensors") in asked  # the repo timm's pretrained_cfg names
    # A random-init probe asks nothing of the network.
    monkeypatch.setattr(network, "unreachable", lambda *a, **k: pytest.fail("the network was checked"))
    monkeypatch.setattr(timm, "create_model", real_create)
    assert create_probe("test_efficientnet", 2, pretrained=False).name == "test_efficientnet"


def test_probe_without_filter_layer_is_refused() -> None:
    class Pooler(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(3)
            self.head = nn.Linear(3, 2)

        def get_classifier(self) -> nn.Module:
            return self.head

        def reset_classifier(self, n: int) -> None:
            self.head = nn.Linear(3, n)

    with pytest.raises(ProbeError, match="no filter-bearing layer"):
        create_probe(Pooler(), 2)


def test_one_class_probe_is_refused() -> None:
    with pytest.raises(ProbeError, match="at least 2 classes"):
        create_probe("test_resnet", 1)


def test_callers_model_is_never_mutated() -> None:
    model = timm.create_model("test_resnet", num_classes=10)
    model.train()
    before = copy.deepcopy(model.state_dict())
    probe = create_probe(model, 3)
    assert model.training and model.get_classifier().out_features == 10
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert probe.model is not model and not probe.training and not probe.model.training
    probe.train()  # the probe refuses to leave eval mode
    assert not any(m.training for m in probe.modules())


def test_random_init_is_deterministic() -> None:
    torch.manual_seed(123)
    a = create_probe("test_resnet", 3)
    torch.manual_seed(456)
    b = create_probe("test_resnet", 3)
    assert a.config.weights_sha256 == b.config.weights_sha256
    assert a.config.pretrained.startswith("random")


def test_data_config_comes_from_the_model() -> None:
    probe = create_probe("test_resnet", 3)
    cfg = timm.data.resolve_model_data_config(timm.create_model("test_resnet"))
    assert probe.data_config["mean"] == cfg["mean"] and probe.data_config["input_size"] == cfg["input_size"]
    small = create_probe("test_resnet", 3, input_size=32)
    assert small.data_config["input_size"] == (3, 32, 32)


def test_families_without_an_adapter_use_the_generic_one() -> None:
    # No shipped adapter changes anything: every timm family goes through timm's common API.
    assert "resnet" not in list_probe_adapters()
    assert type(get_probe_adapter(timm.create_model("test_resnet"))).__name__ == "GenericAdapter"


def test_local_checkpoint_safetensors_and_pth(tmp_path) -> None:
    from safetensors.torch import save_file

    model = timm.create_model("test_resnet")
    first = build_layout(model).param_names[0]
    with torch.no_grad():
        model.get_parameter(first).fill_(0.25)
    st = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(st))
    probe = create_probe("test_resnet", 3, checkpoint_path=str(st))
    assert torch.all(probe.model.get_parameter(first) == 0.25) and probe.config.pretrained == "checkpoint"
    pth = tmp_path / "w.pth"
    torch.save(model.state_dict(), pth)
    assert create_probe("test_resnet", 3, checkpoint_path=str(pth)).config.weights_sha256 != probe.config.weights_sha256
    bad = tmp_path / "bad.pth"
    torch.save({first: torch.zeros(1)}, bad)
    with pytest.raises(WeightsError, match=f"does not fit the probe architecture: size mismatch for {first}"):
        create_probe("test_resnet", 3, checkpoint_path=str(bad))
    # A fine-tuned checkpoint with its own head size loads: the probe refits its head anyway.
    tuned = timm.create_model("test_resnet", num_classes=7)
    with torch.no_grad():
        tuned.get_parameter(first).fill_(0.5)
    ft = tmp_path / "tuned.pth"
    torch.save(tuned.state_dict(), ft)
    assert torch.all(create_probe("test_resnet", 3, checkpoint_path=str(ft)).model.get_parameter(first) == 0.5)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in model.state_dict().items() if k != first}, partial)
    with pytest.raises(WeightsError, match=f"missing '{first}'"):
        create_probe("test_resnet", 3, checkpoint_path=str(partial))


needs_offline = pytest.mark.skipif(
    offline_weights_path("tf_efficientnet_lite0") is None, reason="offline-weights extra not installed"
)


@needs_offline
def test_offline_lite0_classifies_sample_photos() -> None:
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    # A 1000-class probe keeps the ImageNet classifier only if we put it back: build the
    # probe, then load the packaged weights into a plain model with the probe's data config.
    from t2v_hub.probes.weights import load_offline_weights

    probe = create_probe("tf_efficientnet_lite0", 3)
    model = timm.create_model("tf_efficientnet_lite0")
    load_offline_weights(model, "tf_efficientnet_lite0")
    model.eval()
    cfg = probe.data_config
    assert cfg["mean"] == (0.5, 0.5, 0.5)  # from the model's own config, not hard-coded here
    tf = timm.data.create_transform(**cfg, is_training=False)
    batch = torch.stack([tf(Image.fromarray(skimage_data.chelsea())), tf(Image.fromarray(skimage_data.coffee()))])
    with torch.no_grad():
        pred = model(batch).argmax(1).tolist()
    assert pred == [285, 967]


@needs_offline
def test_offline_weights_sha_is_verified(monkeypatch) -> None:
    from t2v_hub.probes import weights as W

    spec = W.OFFLINE_WEIGHTS["tf_efficientnet_lite0"]
    monkeypatch.setitem(W.OFFLINE_WEIGHTS, "tf_efficientnet_lite0", W.OfflineWeights(spec.package, spec.filename, "0" * 64))
    with pytest.raises(WeightsError, match="sha256"):
        create_probe("tf_efficientnet_lite0", 3)


@needs_offline
def test_default_probe_uses_offline_package() -> None:
    probe = create_probe("tf_efficientnet_lite0", 3)
    assert probe.config.pretrained == "offline-package"
    assert probe.config.weights_sha256.startswith("57934424")
    assert probe.layout.dim == 21008


def test_local_dir_probe_loads_saved_weights(tmp_path) -> None:
    from timm.models import _hub

    model = timm.create_model("test_resnet", num_classes=7)
    first = build_layout(model).param_names[0]
    with torch.no_grad():
        model.get_parameter(first).fill_(0.5)
    _hub.save_for_hf(model, str(tmp_path / "m"), model_config={"num_classes": 7})
    probe = create_probe(f"local-dir:{tmp_path / 'm'}", 3)
    assert torch.all(probe.model.get_parameter(first) == 0.5)
    assert probe.name.startswith("local-dir:") and probe.layout.dim == 1040


def test_distilled_two_head_models_are_probes() -> None:
    # LeViT's get_classifier() is a tuple (head, head_dist): the probe's head averages them, as timm
    # does in eval mode, and shares their parameters (fitting it trains the model's own heads).
    model = timm.create_model("levit_128s", img_size=32, embed_dim=(16, 24, 32), key_dim=8, num_heads=(1, 1, 1),
                              depth=(1, 1, 1))
    probe = create_probe(model, 3, input_size=32)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        for q in probe.head().parameters():
            q.normal_()
        assert torch.allclose(probe.logits_from_features(probe.features(x)), probe.model(x), atol=1e-5)
    assert {id(q) for q in probe.head().parameters()} <= {id(q) for q in probe.model.parameters()}


@pytest.mark.parametrize("name", ["efficientvim_m1", "crossvit_tiny"])
def test_branch_heads_give_the_models_own_logits(name: str) -> None:
    # CrossViT and EfficientViM have one head per branch (a ModuleList) over concatenated
    # pre-logits; CrossViT averages them, EfficientViM weights them by softmax(model.weights).
    if name == "crossvit_tiny":  # a 2-branch CrossViT small enough for a test
        from timm.models.crossvit import CrossVit

        model = CrossVit(img_size=[32, 32], patch_size=[8, 16], embed_dim=[16, 32], depth=[[1, 1, 0]],
                         num_heads=[2, 2], mlp_ratio=[2, 2, 1], num_classes=5)
        size = 32
    else:
        model, size = timm.create_model(name, pretrained=False, num_classes=5), 64
    probe = create_probe(model, 5, input_size=size)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        for q in probe.head().parameters():
            q.normal_()
        if hasattr(probe.model, "weights"):
            probe.model.weights.normal_()  # non-uniform branch weights: the softmax must be applied
        assert torch.allclose(probe.logits_from_features(probe.features(x)), probe.model(x), atol=1e-5)


def test_only_the_classifier_of_an_mlp_head_starts_at_zero() -> None:
    # MetaFormer's MlpHead is fc1 -> act -> norm -> fc2; zeroing fc1 as well would cut every
    # gradient to the backbone (the embedding would be all zero, whatever the task).
    from timm.models.metaformer import MetaFormer, MlpHead

    model = MetaFormer(depths=(1, 1, 1, 1), dims=(8, 16, 24, 32), use_mlp_head=True, num_classes=7)
    probe = create_probe(model, 3, input_size=32)
    head = probe.head()
    assert isinstance(head, MlpHead) and head.fc2.out_features == 3
    assert float(head.fc2.weight.abs().sum()) == 0 and float(head.fc1.weight.abs().sum()) > 0
    # A gradient reaches the backbone once the classifier moves off zero.
    with torch.no_grad():
        head.fc2.weight.normal_()
    x = torch.randn(2, 3, 32, 32)
    w = dict(probe.model.named_parameters())[probe.measured_params()[0]]
    w.requires_grad_(True)
    (g,) = torch.autograd.grad(probe.model(x).logsumexp(1).sum(), [w])
    assert float(g.abs().sum()) > 0


def test_a_whole_classifier_head_is_reduced_to_its_fc() -> None:
    # Sequencer's get_classifier() is timm's ClassifierHead (pool + fc); the probe's features are
    # already pooled, so pooling again failed ("Dimension out of range").
    from timm.layers import ClassifierHead

    from t2v_hub.probes.adapters import GenericAdapter

    class Headed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = ClassifierHead(8, 3)

        def get_classifier(self) -> torch.nn.Module:
            return self.head

    m = Headed()
    assert GenericAdapter().head(m) is m.head.fc
    v = torch.randn(2, 8, 4, 4)
    assert torch.allclose(GenericAdapter().head(m)(m.head(v, pre_logits=True)), m.head(v))


def test_conv_classifiers_run_on_pooled_vectors() -> None:
    from t2v_hub.probes.adapters import ConvHeadOnVectors, GenericAdapter

    class ConvHeaded(torch.nn.Module):  # DLA-style: a 1x1 conv classifier
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Conv2d(4, 3, 1)

        def get_classifier(self) -> torch.nn.Module:
            return self.fc

    m = ConvHeaded()
    head = GenericAdapter().head(m)
    assert isinstance(head, ConvHeadOnVectors) and head.head is m.fc
    v = torch.randn(2, 4)
    assert torch.allclose(head(v), m.fc(v[:, :, None, None]).flatten(1))


def test_layers_whose_output_ignores_the_input_are_left_out_of_the_layout() -> None:
    # test_vit_relpos: each block's relative-position MLP computes the same bias for every image;
    # its per-sample Fisher would need one backward per sample, so the layout leaves it out.
    probe = create_probe("test_vit_relpos", 3, input_size=64, img_size=64)
    assert probe.constant_layers and all(".rel_pos." in n for n in probe.constant_layers)
    assert not set(probe.constant_layers) & set(probe.layout.param_names)
    assert any(".attn.qkv." in n for n in probe.layout.param_names)  # the image-dependent layers stay
    from t2v_hub.task2vec import embed

    g = torch.Generator().manual_seed(0)
    e = embed((torch.randn(6, 3, 64, 64, generator=g), torch.arange(6) % 3), probe,
              cache=False, quiet=True)
    assert e.vector.numel() == probe.layout.dim and bool(torch.isfinite(e.vector).all()) and e.norm > 0
    plain = create_probe("test_vit", 3, input_size=32)
    assert plain.constant_layers == [] and plain.layout.param_names == filter_parameter_names(plain.model)
