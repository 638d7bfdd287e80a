"""t2v-hub's environment variables with values it cannot use.

An unusable cache folder (``T2V_HUB_CACHE`` naming a file, or a path that cannot be created)
costs a warning and the cache, never the result: the run completes, uncached, and writes its
output. A value of ``T2V_HUB_DECODE_RAM_MB`` or ``T2V_HUB_RANK_BACKEND`` that means nothing is
refused in one line naming the variable, before any work, with exit code 2 from the CLI.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import write_imagefolder

from t2v_hub import cache as cache_mod
from t2v_hub import constants as C
from t2v_hub.cli.flags import to_cli
from t2v_hub.cli.main import main
from t2v_hub.data import TensorTask
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import ConfigError
from t2v_hub.selection.kernels.ranking import backend
from t2v_hub.task2vec import embed


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch) -> None:
    monkeypatch.setattr(cache_mod, "_warned", set())  # warned once per process: reset per test


def _images(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    return write_imagefolder(tmp_path / "d", ["a", "b"], 3, (8, 8))


def _task() -> TensorTask:
    g = torch.Generator().manual_seed(0)
    return TensorTask(torch.randn(6, 3, 16, 16, generator=g), torch.tensor([0, 1, 0, 1, 0, 1]))


def _embed_argv(data: Path, out: Path, *extra: str) -> list[str]:
    return ["embed", "--dataset", str(data), "--probe", "test_efficientnet", "--input-size", "16", "--out", str(out),
            "--quiet", *extra]


@pytest.mark.parametrize("kind", ["a file", "below a file", "cannot be created"])
def test_unusable_cache_warns_once_and_the_embedding_is_still_written(tmp_path, monkeypatch, capsys, kind) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    cache = {"a file": blocker, "below a file": blocker / "sub", "cannot be created": Path("/proc/t2v-hub-nope")}[kind]
    monkeypatch.setenv("T2V_HUB_CACHE", str(cache))
    out = tmp_path / "task.safetensors"
    capsys.readouterr()
    assert main(_embed_argv(_images(tmp_path), out)) == 0
    err = capsys.readouterr().err
    warns = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warns) == 1, err
    assert str(cache) in warns[0] and "T2V_HUB_CACHE" in warns[0] and "--no-cache" in warns[0]
    assert "cache=False" not in warns[0]  # the CLI says its flag, not the Python parameter
    assert Task2VecEmbedding.load(out).vector.numel() > 0
    assert blocker.read_text() == "not a folder"  # the file in the way is left alone


def test_unusable_cache_from_python_warns_and_returns(tmp_path, monkeypatch) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "afile"))
    with pytest.warns(RuntimeWarning, match=r"cannot be used .*cache=False"):
        emb = embed(_task(), "test_efficientnet", cache=True)
    assert torch.isfinite(emb.vector).all()


def test_unusable_cache_for_t0_warns_and_returns(tmp_path, monkeypatch) -> None:
    from t2v_hub.trivial import trivial_embedding

    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "afile"))
    with pytest.warns(RuntimeWarning, match="cannot be used"):
        t0 = trivial_embedding("test_efficientnet", num_samples=4, input_size=16, quiet=True)
    assert torch.isfinite(t0.vector).all()


def test_usable_cache_is_used_and_silent(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "new" / "cache"))  # created on first use
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        embed(_task(), "test_efficientnet", cache=True)
    assert list((tmp_path / "new" / "cache" / "embeddings").glob("*.safetensors"))


def test_empty_cache_variable_means_the_default(monkeypatch) -> None:
    monkeypatch.setenv("T2V_HUB_CACHE", "")
    assert C.cache_dir().endswith(str(Path(".cache") / "t2v_hub"))


def test_decode_scratch_falls_back_to_the_temp_folder(tmp_path, monkeypatch, capsys) -> None:
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "afile"))
    monkeypatch.setenv("T2V_HUB_DECODE_RAM_MB", "0")  # decoded images always on disk
    out = tmp_path / "task.safetensors"
    capsys.readouterr()
    assert main(_embed_argv(_images(tmp_path), out, "--no-cache")) == 0
    err = capsys.readouterr().err
    assert "decoded images go to" in err and "--no-cache" not in err  # --no-cache was given: not the fix
    assert out.is_file()


@pytest.mark.parametrize("value", ["abc", "-5", "nan", "inf", "1e400"])
def test_bad_decode_ram_is_refused_naming_the_variable(tmp_path, monkeypatch, capsys, value) -> None:
    monkeypatch.setenv("T2V_HUB_DECODE_RAM_MB", value)
    with pytest.raises(ConfigError, match="T2V_HUB_DECODE_RAM_MB"):
        C.decode_ram_bytes()
    out = tmp_path / "task.safetensors"
    capsys.readouterr()
    assert main(_embed_argv(_images(tmp_path), out, "--no-cache")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "T2V_HUB_DECODE_RAM_MB" in err and "unexpected" not in err
    assert not out.exists()


@pytest.mark.parametrize(("value", "expected"), [("", C.DECODE_RAM_BYTES), ("0", 0), ("1.5", int(1.5 * 2**20)),
                                                  (" 64 ", 64 * 2**20)])
def test_decode_ram_values_that_mean_something(monkeypatch, value, expected) -> None:
    monkeypatch.setenv("T2V_HUB_DECODE_RAM_MB", value)
    assert C.decode_ram_bytes() == expected


def test_bad_rank_backend_variable_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setenv("T2V_HUB_RANK_BACKEND", "bogus")
    with pytest.raises(ConfigError, match="T2V_HUB_RANK_BACKEND='bogus'"):
        backend()
    assert backend("torch") == "torch"  # the argument wins over the variable
    monkeypatch.delenv("T2V_HUB_RANK_BACKEND")
    with pytest.raises(ValueError, match="got 'bogus'"):
        backend("bogus")


def test_bad_rank_backend_from_the_cli(monkeypatch, capsys) -> None:
    monkeypatch.setenv("T2V_HUB_RANK_BACKEND", "bogus")
    emb = next(Path("examples/zoo/t2v-zoo/mnist10/task2vec").glob("*.safetensors"))
    capsys.readouterr()
    assert main(["recommend", "--dataset", str(emb), "--hub", "examples/zoo", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "T2V_HUB_RANK_BACKEND" in err and "unexpected" not in err


def test_cache_false_reads_as_the_flag() -> None:
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("--no-cache", action="store_true")
    assert to_cli("or pass cache=False to skip the cache", p) == "or pass --no-cache to skip the cache"
