"""The machine refuses a write: a full disk, a read-only file system, a quota.

Every output (embedding files, plots, expert indexes) fails with one line naming the path, the
cause and the fix that fits it, leaves what was there before untouched and no temporary file
behind; the CLI exits 2, not with "unexpected OSError".
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from t2v_hub.cli.main import main
from t2v_hub.embedding import atomic_write_bytes
from t2v_hub.errors import OutputError

FULL = Path("/dev/full")


def _full(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.skipif(not FULL.exists(), reason="no /dev/full on this system")
def test_a_full_special_file_is_one_output_error() -> None:
    with pytest.raises(OutputError, match="cannot write '/dev/full': No space left on device; free some space"):
        atomic_write_bytes(FULL, b"x" * 10)


def test_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch) -> None:
    out = tmp_path / "task.safetensors"
    out.write_bytes(b"old")
    monkeypatch.setattr(os, "fsync", _full)
    with pytest.raises(OutputError, match="No space left on device; free some space there"):
        atomic_write_bytes(out, b"new")
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task.safetensors"]


def test_a_read_only_file_system_names_itself(tmp_path, monkeypatch) -> None:
    def ro(*_a, **_k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "replace", ro)
    with pytest.raises(OutputError, match="Read-only file system; that file system is read-only"):
        atomic_write_bytes(tmp_path / "t.safetensors", b"new")
    assert list(tmp_path.iterdir()) == []


def test_a_plot_is_written_whole_or_not_at_all(tmp_path, make_embedding, monkeypatch, capsys) -> None:
    pytest.importorskip("matplotlib")
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    make_embedding(0).save(a)
    make_embedding(1).save(b)
    plot = tmp_path / "m.png"
    assert main(["matrix", str(a), str(b), "--plot", str(plot)]) == 0
    before = plot.read_bytes()
    assert before.startswith(b"\x89PNG")
    monkeypatch.setattr(os, "fsync", _full)
    capsys.readouterr()
    assert main(["matrix", str(a), str(b), "--plot", str(plot)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "No space left on device" in err and "unexpected" not in err
    assert plot.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors", "b.safetensors", "m.png"]


def test_a_full_disk_while_writing_an_index_leaves_nothing(tmp_path, monkeypatch) -> None:
    from t2v_hub.selection.index import write_index

    monkeypatch.setattr(Path, "write_bytes", _full)
    space = {"probe": "p", "weights_sha256": "w", "layout_hash": "l", "dim": "4", "method": "montecarlo"}
    with pytest.raises(OutputError, match="cannot write .*idx.*No space left on device"):
        write_index(tmp_path / "idx", space, ["a"], [""], [""], [torch.rand(1, 4) + 0.1], torch.ones(4))
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_nothing_named_is_one_line_and_exit_2(tmp_path, make_embedding, monkeypatch, capsys) -> None:
    a = tmp_path / "a.safetensors"
    make_embedding(0).save(a)

    def eio(*_a, **_k):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/mnt/dead/a.safetensors")

    monkeypatch.setattr("t2v_hub.embedding.Task2VecEmbedding.load", eio)
    capsys.readouterr()
    assert main(["distance", str(a), str(a)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Input/output error (/mnt/dead/a.safetensors)" in err
    assert "unexpected" not in err


@pytest.mark.parametrize(("out", "expected"), [
    ("{tmp}/" + "a" * 5000 + ".safetensors", "characters)': File name too long; pass a shorter or valid path"),
    ("{tmp}/afile/x.safetensors", "afile' is a file, not a folder; choose another path"),
])
def test_output_names_the_system_cannot_use_are_refused_before_any_work(tmp_path, capsys, out, expected) -> None:
    (tmp_path / "afile").write_text("x")
    out = out.format(tmp=tmp_path)
    capsys.readouterr()
    code = main(["embed", "--dataset", str(tmp_path / "no-data-needed"), "--probe", "test_efficientnet", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err
