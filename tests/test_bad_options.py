"""Nonsense options fail up front with one line naming the option and the fix, never deep inside a run."""

from __future__ import annotations

import pytest
import torch

import t2v_hub
from t2v_hub.cli.main import main
from t2v_hub.devices import pick_device
from t2v_hub.errors import DeviceError, EmbeddingError, ProbeError, WeightsError
from t2v_hub.probes import create_probe
from t2v_hub.task2vec import TensorTask
from t2v_hub.trivial import trivial_embedding


def _task() -> TensorTask:
    g = torch.Generator().manual_seed(0)
    return TensorTask(torch.randn(8, 3, 32, 32, generator=g), torch.tensor([0, 1] * 4))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_is_refused_before_any_work() -> None:
    with pytest.raises(DeviceError, match=r"device='cuda': this machine has no usable CUDA device.*device='cpu'"):
        pick_device("cuda")
    with pytest.raises(DeviceError, match="no usable CUDA"):
        t2v_hub.embed(_task(), "test_efficientnet", input_size=32, device="cuda:0", cache=False, quiet=True)


def test_devices_that_exist_are_returned_as_they_are() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(None) == pick_device("auto")
    assert pick_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="not a torch device"):
        pick_device("gpu7")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cli_says_the_flag_for_a_missing_device(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    from PIL import Image

    for c in ("a", "b"):
        (folder / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (60 * i, 80, 120)).save(folder / c / f"{i}.png")
    capsys.readouterr()
    code = main(["embed", "--dataset", str(folder), "--probe", "test_efficientnet", "--input-size", "32",
                 "--device", "cuda", "--out", str(tmp_path / "e.safetensors"), "--quiet", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and "--device cuda: this machine has no usable CUDA device" in err and "device=" not in err
    assert not (tmp_path / "e.safetensors").exists()


@pytest.mark.parametrize("size", [0, -3, 100_000, (3, 32), (3, 32.0, 32), True, 32.0, "32"])
def test_input_sizes_that_are_no_image_size_are_refused(size) -> None:
    with pytest.raises(ProbeError, match=r"input_size="):
        create_probe("test_efficientnet", 2, input_size=size)


def test_cli_caps_the_input_size(capsys) -> None:
    code = main(["embed", "--dataset", "x", "--input-size", "100000", "--out", "/tmp/never.safetensors"])
    err = capsys.readouterr().err
    assert code == 2 and "--input-size: is too large (100000); use at most 4096" in err


def test_trivial_needs_one_sample_per_class(capsys, tmp_path) -> None:
    with pytest.raises(EmbeddingError, match=r"num_samples=1: t0 needs at least 2 samples"):
        trivial_embedding("test_efficientnet", input_size=32, num_samples=1, cache=False, quiet=True)
    code = main(["trivial", "--probe", "test_efficientnet", "--num-samples", "1", "--out", str(tmp_path / "t.st")])
    assert code == 2 and "--num-samples: must be at least 2, got 1" in capsys.readouterr().err


def test_an_unreadable_checkpoint_is_one_line(tmp_path, capsys) -> None:
    bad = tmp_path / "weights.pth"
    bad.write_text("not a checkpoint\n" * 3)
    with pytest.raises(WeightsError, match=r"cannot read checkpoint .*; pass a \.safetensors file"):
        create_probe("test_efficientnet", 2, checkpoint_path=str(bad), input_size=32)
    code = main(["trivial", "--probe", "test_efficientnet", "--input-size", "32", "--checkpoint", str(bad),
                 "--out", str(tmp_path / "t.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: cannot read checkpoint")


def test_unknown_fisher_methods_are_refused_where_they_filter(capsys) -> None:
    for cmd in (["experts", "--hub", "."], ["index", "--hub", ".", "--out", "/tmp/never-idx"]):
        code = main([*cmd, "--method", "bogus"])
        err = capsys.readouterr().err
        assert code == 2 and "invalid choice: 'bogus'" in err and "montecarlo" in err


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"max_samples": "5"}, r"max_samples='5': expected a whole number"),
    ({"max_samples": True}, r"max_samples=True: expected a whole number"),
    ({"seed": 1.5}, r"seed=1.5: expected a whole number of at least 0"),
    ({"seed": -1}, r"seed=-1"),
    ({"batch_size": 2.5}, r"batch_size=2.5"),
    ({"mc_samples": 0}, r"mc_samples=0"),
])
def test_embed_names_the_parameter_of_a_wrong_type(kwargs, match) -> None:
    with pytest.raises(t2v_hub.errors.T2VError, match=match):
        t2v_hub.embed(_task(), "test_efficientnet", input_size=32, cache=False, quiet=True, **kwargs)


def test_numpy_counts_are_whole_numbers() -> None:
    import numpy as np

    emb = t2v_hub.embed(_task(), "test_efficientnet", input_size=32, cache=False, quiet=True,
                        max_samples=np.int64(8), seed=np.int32(0))
    assert emb.config("max_samples") == 8 and emb.config("seed") == 0


def test_numpy_input_sizes_are_whole_numbers() -> None:
    import numpy as np

    assert create_probe("test_efficientnet", 2, input_size=np.int64(32)).config.input_size == (3, 32, 32)


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--license", "notalicense", "--license notalicense is not a Hub license identifier"),
    ("--license", "Apache-2.0", "did you mean apache-2.0"),
    ("--license", "", "argument --license: got an empty value"),
    ("--base-model", "not a model!!", "is not a Hub model id"),
])
def test_attach_refuses_card_fields_the_hub_would_refuse(local_hub, make_embedding, tmp_path, capsys, flag, value,
                                                         expected) -> None:
    path = tmp_path / "e.safetensors"
    make_embedding(0).save(path)
    code = main(["attach", "--model", "org/m", "--hub", str(local_hub.root), "--create-repo", "--embedding",
                 str(path), flag, value])
    err = capsys.readouterr().err
    assert code == 2 and expected in err, err
    assert not local_hub.repo_exists("org/m")  # nothing half-written


def test_push_embedding_names_the_parameter(local_hub, make_embedding) -> None:
    from t2v_hub.errors import CardError
    from t2v_hub.hub import push_embedding

    with pytest.raises(CardError, match=r"license='MIT' is not a Hub license identifier; did you mean mit"):
        push_embedding(local_hub, "org/m", make_embedding(0), create_repo=True, license="MIT")
    res = push_embedding(local_hub, "org/m", make_embedding(0), create_repo=True, license="mit",
                         base_model="timm/resnet50.a1_in1k")
    assert res.changed and res.commit_id
    card = local_hub.read_card("org/m").text
    assert "license: mit" in card and "base_model: timm/resnet50.a1_in1k" in card


@pytest.mark.parametrize(("flag", "cap"), [("--mc-samples", 1000), ("--head-draws", 10_000_000),
                                          ("--fisher-steps", 100_000), ("--input-size", 4096)])
def test_work_multipliers_are_capped_before_any_work(capsys, flag, cap) -> None:
    code = main(["embed", "--dataset", "nowhere", flag, str(cap * 10), "--out", "/tmp/never.safetensors"])
    err = capsys.readouterr().err
    assert code == 2 and f"{flag}: is too large ({cap * 10}); use at most {cap}" in err
