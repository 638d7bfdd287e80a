"""Every command, a table of bad values per flag: non-zero exit, one `error:` line, no traceback, no file written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from t2v_hub.cli.main import main

DS = "--dataset"
BAD_NUMBERS = ["0", "-5", "nan", "abc", "99999999999999999999999"]

CASES: list[list[str]] = []
for flag in ("--batch-size", "--mc-samples", "--max-samples", "--input-size", "--fisher-steps", "--head-draws"):
    CASES += [["embed", DS, "d", "--out", "o.safetensors", flag, v] for v in BAD_NUMBERS]
CASES += [["embed", DS, "d", "--out", "o.safetensors", "--seed", v] for v in ("-1", "2e3", "99999999999999999999999")]
CASES += [["embed", DS, "d", "--out", "o.safetensors", "--device", v] for v in ("bogus", "gpu0", "")]
CASES += [["embed", DS, "d", "--out", "o.safetensors", "--method", "fisher"],
          ["embed", DS, "d", "--out", "o.safetensors", "--mixed-precision", "fp8"],
          ["embed", DS, "d", "--out", "o.safetensors", "--format", "yaml"],
          ["embed", DS, "d", "--out", "o.safetensors", "--on-bad-image", "ignore"],
          ["embed", "--out", "o.safetensors"],  # --dataset missing
          ["embed", DS, "d", "--out", "o.safetensors", "--num-workers", "-1"]]  # flag removed: was dropped
for flag in ("--top-k", "--shortlist"):
    CASES += [["recommend", DS, "d", flag, v] for v in BAD_NUMBERS]
CASES += [["recommend", DS, "d", "--alpha", v] for v in ("nan", "inf", "-1", "1.5")]
CASES += [["recommend", DS, "d", "--rerank", "leep"], ["recommend", DS, "d", "--max-model-mb", "-3"],
          ["recommend", DS, "d", "--index", "i", "--hub", "h"], ["recommend", DS, "d", "--format", "xml"]]
CASES += [["distance", "a.safetensors"], ["distance", "a", "b", "--alpha", "nan"],
          ["distance", "missing1.safetensors", "missing2.safetensors"]]
CASES += [["matrix", "a.safetensors"], ["matrix", "a", "b", "--alpha", "2"]]
CASES += [["index", "--hub", "h", "--out", "x", "--shard-rows", v] for v in ("0", "-1")]
CASES += [["index", "--hub", "h", "--out", "x", "--dtype", "float16"]]
CASES += [["selector", "train", "--tasks", "t", "--errors", "e.csv", flag, v]
          for flag, v in (("--lr", "nan"), ("--lr", "0"), ("--epochs", "-1"), ("--alpha-soft", "0"),
                          ("--weight-decay", "-1"), ("--seed", "-3"), ("--alpha", "inf"))]
CASES += [["selector", "eval", "--tasks", "t"], ["selector", "bogus"]]
CASES += [["score", DS, "d", "--models", "test_resnet", "--metric", "bogus"],
          ["score", DS, "d", "--models"], ["score", DS, "d", "--models", "m", "--batch-size", "0"]]
CASES += [["attach", "--model", "a/b"], ["attach", "--model", "../x", "--embedding", "e.safetensors"],
          ["attach", "--model", "a/b", "--embedding", "missing.safetensors", "--hub", "."]]
CASES += [["plugins", "list", "--format", "yaml"], ["nosuchcommand"], ["experts", "--format", "html"]]
# A NUL byte fits no path, id, name or token: one error naming the argument, not "embedded null byte".
NUL = "a\x00b"
CASES += [["index", "--hub", "h", "--out", NUL], ["embed", DS, NUL, "--out", "o.safetensors"],
          ["embed", DS, "d", "--out", NUL], ["recommend", DS, "d", "--hub", NUL], ["recommend", DS, "d", "--token", NUL],
          ["attach", "--model", NUL, "--embedding", "e.safetensors"], ["matrix", "a.safetensors", NUL],
          ["selector", "train", "--tasks", NUL, "--errors", "e.csv"], ["experts", "--filter", NUL],
          ["trivial", "--probe", "test_efficientnet", "--out", NUL]]
CASES += [["embed", DS, ".", "--out", "o.safetensors", "--config", "fr"],  # a local folder has no configs
          ["embed", DS, ".", "--out", "o.safetensors", "--revision", "main"]]


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(c)[:60] for c in CASES])
def test_bad_values_end_in_one_error_line(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / ".cache-unused"))
    before = _snapshot(tmp_path)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / ".cache-unused").exists() or not any((tmp_path / ".cache-unused").rglob("*.safetensors"))


def test_unexpected_exceptions_are_one_line_with_a_debug_hint(monkeypatch, capsys) -> None:
    import t2v_hub.cli.distance as distance

    def boom(args):  # a bug anywhere: not a T2VError
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(distance, "run", boom)
    assert main(["distance", "a", "b"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "T2V_HUB_DEBUG=1" in err and "ZeroDivisionError" in err
    monkeypatch.setenv("T2V_HUB_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["distance", "a", "b"])
    assert os.environ["T2V_HUB_DEBUG"] == "1"
