"""Library errors name Python parameters; the CLI names its flags for the same problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import t2v_hub
from t2v_hub.cli.flags import to_cli
from t2v_hub.cli.main import build_parser, main
from t2v_hub.errors import DataError


def _sub(name: str):
    import argparse

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def test_python_caller_is_told_the_parameter() -> None:
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(DataError, match=r"max_samples=2 is below the number of classes") as info:
        t2v_hub.embed(t2v_hub.task2vec.TensorTask(x, y), "test_efficientnet", max_samples=2, input_size=32)
    assert "--" not in str(info.value)


def test_cli_user_is_told_the_flag(tmp_path, capsys) -> None:
    folder = tmp_path / "imgs"
    from PIL import Image

    for c in ("a", "b", "c"):
        (folder / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(folder / c / f"{i}.png")
    code = main(["embed", "--dataset", str(folder), "--probe", "test_efficientnet", "--input-size", "32",
                 "--max-samples", "2", "--out", str(tmp_path / "e.safetensors"), "--quiet", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and "--max-samples 2" in err and "max_samples" not in err


@pytest.mark.parametrize(("message", "command", "expected"), [
    ("top_k must be at least 1, got 0", "recommend", "--top-k must be at least 1, got 0"),
    ("hub=./x and endpoint=http://a disagree; pass only one", "attach", "--hub ./x and --endpoint http://a disagree"),
    ("/x exists; pass overwrite=True to replace it", "index", "/x exists; pass --force to replace it"),
    ("cannot fetch weights; or use pretrained=False", "embed", "cannot fetch weights; or use --no-pretrained"),
    ("empty repo id; pass repo_id=namespace/name", "attach", "empty repo id; pass --model namespace/name"),
    # Words that only look like parameters stay as they are.
    ("file a_b.safetensors is damaged", "embed", "file a_b.safetensors is damaged"),
])
def test_translation(message: str, command: str, expected: str) -> None:
    assert expected in to_cli(message, _sub(command))


ZOO = str(Path(__file__).resolve().parent.parent / "examples" / "zoo")


@pytest.mark.parametrize(("argv", "flag"), [
    (["recommend", "--dataset", "x.safetensors", "--hub", ""], "--hub"),
    (["recommend", "--dataset", "x.safetensors", "--hub", "  "], "--hub"),
    (["recommend", "--dataset", "x.safetensors", "--hub", ZOO, "--trivial", ""], "--trivial"),
    (["recommend", "--dataset", "x.safetensors", "--index", ""], "--index"),
    (["recommend", "--dataset", "x.safetensors", "--hub", ZOO, "--filter", "vision", ""], "--filter"),
    (["recommend", "--dataset", "x.safetensors", "--hub", ZOO, "--selector", ""], "--selector"),
    (["embed", "--dataset", "d", "--probe", "test_efficientnet", "--out", ""], "--out"),
    (["matrix", "a.safetensors", "b.safetensors", "--plot", ""], "--plot"),
    (["distance", "", "b.safetensors"], "embeddings"),
])
def test_an_empty_value_is_refused_not_read_as_absent(argv: list[str], flag: str, capsys) -> None:
    """`--hub ""` used to mean the Hugging Face Hub, `--trivial ""` the default t0, `--index ""` the
    current folder: one unset shell variable silently changed what ran."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: argument {flag}: got an empty value") and len(err.splitlines()) == 1


def test_an_empty_token_means_no_token(tmp_path: Path, capsys) -> None:
    emb = tmp_path / "e.safetensors"
    emb.write_bytes((Path(ZOO) / "t2v-zoo" / "fashion10" / "task2vec" / "tf_efficientnet_lite0.safetensors").read_bytes())
    assert main(["recommend", "--dataset", str(emb), "--hub", ZOO, "--token", "", "--quiet", "--top-k", "1"]) == 0
    assert "t2v-zoo/fashion10" in capsys.readouterr().out


EMB = str(Path(ZOO) / "t2v-zoo" / "fashion10" / "task2vec" / "tf_efficientnet_lite0.safetensors")


@pytest.mark.parametrize(("argv", "flag"), [
    # Valid up to the NUL: `index --out` used to end in "unexpected ValueError: embedded null byte",
    # and `experts --filter` listed nothing with exit code 0.
    (["index", "--hub", ZOO, "--out", "idx\x00"], "--out"),
    (["experts", "--hub", ZOO, "--filter", "vision\x00"], "--filter"),
    (["recommend", "--dataset", EMB, "--hub", ZOO, "--token", "hf_\x00"], "--token"),
    (["distance", EMB, "b\x00.safetensors"], "embeddings"),
])
def test_a_nul_byte_is_refused_naming_the_argument(argv: list[str], flag: str, tmp_path: Path, monkeypatch,
                                                  capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: argument {flag}: contains a NUL byte") and len(err.splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_the_library_refuses_empty_hub_and_selector_specs() -> None:
    from t2v_hub.errors import HubError, SelectorError
    from t2v_hub.hub import get_hub
    from t2v_hub.selection.model2vec import load_selector

    for bad in ("", "   "):
        with pytest.raises(HubError, match="hub="):
            get_hub(bad)
        with pytest.raises(SelectorError, match="selector="):
            load_selector(bad)


def test_sigterm_runs_the_cleanups_and_exits_143(capsys) -> None:
    """`kill` / `timeout` send SIGTERM, whose default ends Python on the spot: temporary files of an
    atomic write, a half-built index folder would stay. The CLI turns it into an exception like ^C."""
    import argparse
    import os
    import signal
    import time

    from t2v_hub.cli.main import _run

    cleaned = []

    def command(_: argparse.Namespace) -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler's exception before this ends
            return 0
        finally:
            cleaned.append(True)

    before = signal.getsignal(signal.SIGTERM)
    assert _run(argparse.Namespace(_run=command, _parser=None)) == 143
    assert cleaned == [True] and capsys.readouterr().err.strip() == "terminated"
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the caller (tests call main() in-process)


def test_mixed_precision_auto_follows_the_device(monkeypatch) -> None:
    """`auto` is bf16 where the passes run on CUDA, none elsewhere: `--device cpu` on a GPU machine
    must not autocast the CPU (slow without native bf16, and not what "auto" promises)."""
    import torch

    from t2v_hub.cli._common import autocast_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("auto", None) is torch.bfloat16 and autocast_dtype("auto", "auto") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert autocast_dtype("auto", None) is None and autocast_dtype("bf16", "cpu") is torch.bfloat16
