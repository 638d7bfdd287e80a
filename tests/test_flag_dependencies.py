"""Flags that only mean something beside another flag, outputs named for the wrong format, and inputs
of the wrong kind: each is refused in one line naming the fix, before any work, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import write_imagefolder

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import EmbeddingError, HubError
from t2v_hub.hub import get_hub


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _images(tmp_path: Path) -> Path:
    (tmp_path / "d").mkdir()
    return write_imagefolder(tmp_path / "d", ["a", "b"], 2, (8, 8))


@pytest.fixture
def two(tmp_path, make_embedding) -> tuple[str, str]:
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    make_embedding(0).save(a)
    make_embedding(1).save(b)
    return str(a), str(b)


@pytest.mark.parametrize(("argv", "expected"), [
    (["distance", "{a}", "{b}", "--alpha", "0.5"], "--alpha weighs the trivial-task term of d_asym: add --asymmetric"),
    (["matrix", "{a}", "{b}", "--alpha", "0.5"], "--alpha applies to d_asym: add --asymmetric, or drop --alpha"),
    (["matrix", "{a}", "{b}", "--trivial", "{a}"], "--trivial applies to d_asym: add --asymmetric, or drop --trivial"),
    # flags that shape a plot when no plot is asked for (2026-12-04: exit 0, ignored)
    (["matrix", "{a}", "{b}", "--color-by", "zoo_pool"], "--color-by colours the t-SNE map: add --embedding-plot"),
    (["matrix", "{a}", "{b}", "--plot", "{a}.png", "--color-by", "x"], "--color-by colours the t-SNE map"),
    (["matrix", "{a}", "{b}", "--title", "T"], "--title names a figure: add --plot heat.png or --embedding-plot"),
    (["matrix", "{a}", "{b}", "--no-print"], "--no-print with no --plot or --embedding-plot leaves nothing to do"),
])
def test_asymmetric_only_flags_need_asymmetric(capsys, two, argv, expected) -> None:
    a, b = two
    code, err = _run(capsys, [x.format(a=a, b=b) for x in argv])
    assert code == 2 and expected in err and err.count("\n") == 1
    assert not list(Path(a).parent.glob("*.png"))  # refused before any work


def test_a_matrix_hub_that_adds_nothing_is_said(capsys, two, tmp_path) -> None:
    a, b = two
    (tmp_path / "empty_hub").mkdir()
    code, err = _run(capsys, ["matrix", a, b, "--hub", str(tmp_path / "empty_hub")])
    assert code == 0 and f"note: --hub {tmp_path / 'empty_hub'} adds nothing to the matrix: no experts" in err
    zoo = str(Path(__file__).resolve().parent.parent / "examples" / "zoo")
    code, err = _run(capsys, ["matrix", a, b, "--hub", zoo])  # 12 experts, none in the files' (test) space
    assert code == 0 and "12 expert(s), none in the space of" in err


def test_distance_alpha_still_works_with_asymmetric(capsys, two, monkeypatch) -> None:
    import t2v_hub.trivial as trivial

    a, b = two
    t0 = Task2VecEmbedding.load(a)
    monkeypatch.setattr(trivial, "trivial_for", lambda e: t0)  # the random test vectors have no probe to embed t0 with
    capsys.readouterr()
    assert main(["distance", a, b]) == 0
    d_sym = float(capsys.readouterr().out)
    assert main(["distance", a, b, "--asymmetric", "--alpha", "0.5"]) == 0
    d_asym = float(capsys.readouterr().out)
    # d_asym(a -> b) = d_sym(a, b) - alpha * d_sym(a, t0), and t0 = a here: d_sym(a, a) = 0.
    assert d_asym == pytest.approx(d_sym, abs=1e-6)


@pytest.mark.parametrize("flag", [["--shortlist", "5"], ["--max-model-mb", "100"]])
def test_stage_two_flags_need_rerank(capsys, tmp_path, flag) -> None:
    code, err = _run(capsys, ["recommend", "--dataset", str(tmp_path), "--hub", str(tmp_path), *flag])
    assert code == 2 and f"{flag[0]} sets stage 2: add --rerank logme" in err


@pytest.mark.parametrize("method", ["empirical", "variational"])
def test_mc_samples_is_refused_where_no_label_is_drawn(capsys, tmp_path, method) -> None:
    data = _images(tmp_path)
    out = tmp_path / "e.safetensors"
    code, err = _run(capsys, ["embed", "--dataset", str(data), "--probe", "test_efficientnet", "--input-size", "32",
                              "--method", method, "--mc-samples", "3", "--out", str(out), "--quiet", "--no-cache"])
    assert code == 2 and f"--mc-samples sets how many labels are drawn from the model, which --method {method}" in err
    assert not out.exists()


@pytest.mark.parametrize(("cmd", "name"), [
    (["embed", "--dataset", "{d}", "--probe", "test_efficientnet", "--input-size", "32"], "task.json"),
    (["trivial", "--probe", "test_efficientnet", "--input-size", "32"], "t0.txt"),
])
def test_safetensors_outputs_must_be_named_so(capsys, tmp_path, cmd, name) -> None:
    data = _images(tmp_path)
    out = tmp_path / name
    code, err = _run(capsys, [*(x.format(d=data) for x in cmd), "--out", str(out)])
    assert code == 2 and "its name must end in .safetensors" in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp*"))


def test_a_folder_is_not_an_embedding_file(tmp_path) -> None:
    with pytest.raises(EmbeddingError, match="is a folder, not an embedding file"):
        Task2VecEmbedding.load(tmp_path)


def test_a_file_is_not_a_local_hub(tmp_path) -> None:
    f = tmp_path / "x.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(HubError, match="is a file, not a folder; pass the hub's folder, or 'hf'"):
        get_hub(str(f))
    with pytest.raises(HubError, match="does not exist; create it, or pass 'hf'"):
        get_hub(str(tmp_path / "nope"))


def test_an_undecodable_image_is_named_by_its_file(capsys, tmp_path) -> None:
    data = _images(tmp_path)
    broken = data / "a" / "0.png"
    broken.write_bytes(b"\x89PNG but not really")
    code, err = _run(capsys, ["embed", "--dataset", str(data), "--probe", "test_efficientnet", "--input-size", "32",
                              "--out", str(tmp_path / "e.safetensors"), "--quiet", "--no-cache"])
    assert code == 2 and f"{broken}: not an image PIL can read (19 bytes starting" in err
    assert "BytesIO" not in err and "--on-bad-image skip" in err
    empty = data / "b" / "1.png"
    empty.write_bytes(b"")
    skip = ["embed", "--dataset", str(data), "--probe", "test_efficientnet", "--input-size", "32",
            "--out", str(tmp_path / "e.safetensors"), "--on-bad-image", "skip"]
    code, err = _run(capsys, [*skip, "--quiet", "--no-cache"])
    assert code == 0
    # Skipping is said, with the rows and why, and counted in the summary line, cached runs included.
    assert "warning: skipped 2 of" in err and f"{broken}: not an image PIL can read" in err
    for _ in range(2):  # the second run is a cache hit: nothing decoded, no warning, the count kept
        capsys.readouterr()
        code = main([*skip, "--quiet"])
        out = capsys.readouterr()
    assert code == 0 and "(cached)" in out.out + out.err and "(2 bad images skipped)" in out.out + out.err


def test_selector_names_the_ids_that_do_not_match(capsys, tmp_path, make_embedding) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for i in range(2):
        make_embedding(i, dataset_id=f"user/task{i}").save(tasks / f"t{i}.safetensors")
    errors = tmp_path / "errors.csv"
    errors.write_text("task,user/expert\nuser/other0,0.1\nuser/other1,0.2\n")
    code, err = _run(capsys, ["selector", "train", "--errors", str(errors), "--tasks", str(tasks),
                              "--out", str(tmp_path / "s.safetensors")])
    assert code == 2 and "the matrix names 'user/other0', 'user/other1'" in err and "'user/task0'" in err
    assert not Path(tmp_path / "s.safetensors").exists()


def test_quiet_reaches_the_library_hints_and_is_restored(capsys, tmp_path, monkeypatch) -> None:
    import os

    from t2v_hub.trivial import trivial_embedding

    monkeypatch.setenv("T2V_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("T2V_HUB_QUIET", raising=False)
    capsys.readouterr()
    trivial_embedding("test_efficientnet", input_size=32, num_samples=4, cache=False)
    assert "computing the trivial embedding" in capsys.readouterr().err
    monkeypatch.setenv("T2V_HUB_QUIET", "1")
    trivial_embedding("test_efficientnet", input_size=32, num_samples=4, cache=False)
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("T2V_HUB_QUIET")
    assert main(["trivial", "--probe", "test_efficientnet", "--input-size", "32", "--num-samples", "4",
                 "--out", str(tmp_path / "t0.safetensors"), "--quiet"]) == 0
    assert "T2V_HUB_QUIET" not in os.environ  # one command's --quiet does not silence the next


def test_quiet_silences_the_lazily_imported_libraries_through_their_variables(tmp_path, monkeypatch) -> None:
    import os

    import t2v_hub.cli.trivial as trivial_cmd

    names = ("HF_HUB_VERBOSITY", "DATASETS_VERBOSITY")
    for k in names:
        monkeypatch.delenv(k, raising=False)
    seen: dict[str, str | None] = {}

    def run(args):  # what a lazily imported huggingface_hub / datasets would read when configuring its logger
        seen.update({k: os.environ.get(k) for k in names})
        return 0

    monkeypatch.setattr(trivial_cmd, "run", run)
    assert main(["trivial", "--probe", "test_efficientnet", "--out", str(tmp_path / "t0.safetensors"), "--quiet"]) == 0
    assert seen == {"HF_HUB_VERBOSITY": "error", "DATASETS_VERBOSITY": "error"}
    assert not any(k in os.environ for k in names)


def test_quiet_silences_datasets_progress_bars_and_restores_them(capsys, tmp_path) -> None:
    """`--quiet` on a CSV dataset printed datasets' "Generating train split" bar; now they are off while
    the data layer loads under --quiet, and on again after it (this process goes on)."""
    import datasets
    from conftest import write_imagefolder

    folder = write_imagefolder(tmp_path, ["a", "b"], 3, (20, 24))
    rows = [f"{p.relative_to(folder)},{p.parent.name}" for p in sorted(folder.glob("*/*.png"))]
    (folder / "data.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    assert datasets.is_progress_bar_enabled()
    code, err = _run(capsys, ["embed", "--dataset", str(folder / "data.csv"), "--probe", "test_efficientnet",
                              "--input-size", "32", "--out", str(tmp_path / "e.safetensors"), "--quiet", "--no-cache"])
    assert code == 0 and "Generating" not in err and "examples/s" not in err, err
    assert datasets.is_progress_bar_enabled()


@pytest.mark.parametrize("flag", [["--method", "batch"], ["--checkpoint", "w.safetensors"], ["--input-size", "32"]])
def test_trivial_like_takes_its_space_from_the_embedding(capsys, two, tmp_path, flag) -> None:
    a, _ = two
    out = tmp_path / "t0.safetensors"
    code, err = _run(capsys, ["trivial", "--like", a, *flag, "--out", str(out)])
    assert code == 2 and f"{flag[0]}" in err and "applies to --probe; --like takes the probe" in err and "drop it" in err
    assert not out.exists()


def test_dataset_flags_with_an_embedding_file_are_refused(capsys, two, tmp_path, local_hub) -> None:
    a, _ = two
    local_hub.create_repo("org/m")
    code, err = _run(capsys, ["attach", "--model", "org/m", "--hub", str(local_hub.root), "--embedding", a,
                              "--max-samples", "5", "--split", "test"])
    assert code == 2 and "--split, --max-samples shape an embedding computed from a dataset" in err
    assert not list((local_hub.root / "org" / "m").glob("task2vec/*"))
    code, err = _run(capsys, ["recommend", "--dataset", a, "--hub", str(local_hub.root), "--input-size", "64"])
    assert code == 2 and f"--input-size shapes an embedding computed from a dataset; --dataset {a} is an embedding" in err


def test_index_and_filter_are_alternatives(capsys, tmp_path) -> None:
    code, err = _run(capsys, ["recommend", "--dataset", str(tmp_path), "--index", str(tmp_path), "--filter", "x"])
    assert code == 2 and "--filter selects a hub's experts by tag, and an index holds the experts it was built" in err


def test_random_init_and_a_checkpoint_are_refused_together_on_the_cli(capsys, tmp_path) -> None:
    from t2v_hub.probes import create_probe

    # The library takes both (the checkpoint's weights are used, nothing is fetched) ...
    ckpt = tmp_path / "w.pth"
    import torch

    torch.save(create_probe("test_efficientnet", 2, pretrained=False).model.state_dict(), ckpt)
    assert create_probe("test_efficientnet", 2, pretrained=False, checkpoint_path=str(ckpt)).config.pretrained == "checkpoint"
    # ... the CLI's --no-pretrained means "a random init", which the checkpoint would silently override.
    code, err = _run(capsys, ["trivial", "--probe", "test_efficientnet", "--no-pretrained", "--checkpoint",
                              str(ckpt), "--out", str(tmp_path / "t0.safetensors")])
    assert code == 2 and "--no-pretrained asks for a random init and --checkpoint for weights from a file" in err


@pytest.mark.parametrize("name", ["heat.txt", "heat"])
def test_plots_must_be_named_for_a_figure_format(capsys, two, tmp_path, name) -> None:
    a, b = two
    code, err = _run(capsys, ["matrix", a, b, "--plot", str(tmp_path / name)])
    assert code == 2 and "the format follows the name, which must end in one of .png, .pdf" in err
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("cmd", [["experts", "--hub", "."], ["index", "--hub", ".", "--out", "idx"],
                                 ["embed", "--dataset", "x", "--out", "e.safetensors"],
                                 ["trivial", "--out", "t0.safetensors"]])
def test_an_empty_probe_name_is_refused(capsys, cmd) -> None:
    code, err = _run(capsys, [*cmd, "--probe", ""])
    assert code == 2 and "--probe: must be a probe name such as tf_efficientnet_lite0, got an empty string" in err


def test_special_files_are_written_in_place_never_replaced(tmp_path, capsys, make_embedding) -> None:
    import os
    import stat
    import threading

    from t2v_hub.embedding import atomic_write_bytes

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_bytes(fifo, b"abc")  # a rename over it would replace the FIFO with a regular file
    reader.join(timeout=10)
    assert got == [b"abc"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert not list(tmp_path.glob(".pipe.*"))
    # /dev/null is a valid --out (benchmarks discard the file so), whatever its missing suffix.
    a = tmp_path / "a.safetensors"
    make_embedding(0).save(a)
    code, err = _run(capsys, ["trivial", "--like", str(a), "--out", os.devnull])
    assert "must end in .safetensors" not in err
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_index_refuses_its_destination_before_reading_any_card(capsys, tmp_path, monkeypatch) -> None:
    import t2v_hub.hub as hub_mod

    monkeypatch.setattr(hub_mod, "list_experts", lambda *a, **k: pytest.fail("the hub was listed first"))
    taken = tmp_path / "photos"
    taken.mkdir()
    (taken / "cat.jpg").write_bytes(b"x")
    code, err = _run(capsys, ["index", "--hub", str(tmp_path), "--out", str(taken)])
    assert code == 2 and "exists; pass --force to replace it" in err
    code, err = _run(capsys, ["index", "--hub", str(tmp_path), "--out", str(taken), "--force"])
    assert code == 2 and "is not an expert index" in err and (taken / "cat.jpg").exists()


@pytest.mark.parametrize(("extra", "expected"), [
    (["--epochs", "5"], "--epochs trains the per-expert biases (--bias both, filter, scalar or none); --bias layer"),
    (["--weight-decay", "0.1"], "--weight-decay trains the per-expert biases"),
    (["--bias", "filter", "--layer-decay", "0.1"], "--layer-decay applies to --bias layer, not --bias filter"),
    (["--bias", "both", "--layer-epochs", "5"], "--layer-epochs applies to --bias layer, not --bias both"),
    (["--bias", "filter", "--seed", "3"], "--seed orders the tasks of each step, so it needs --batch-size > 0"),
    (["--eval-metric", "error"], "--eval-metric reads --eval-results: drop it, or pass --eval-results HUB"),
])
@pytest.mark.parametrize("action", ["train", "eval"])
def test_selector_training_flags_the_bias_kind_ignores_are_refused(capsys, tmp_path, action, extra, expected) -> None:
    """Each was taken and ignored (exit 0, another selector than asked for); now one line, before any work."""
    errors = tmp_path / "errors.csv"
    errors.write_text("task,e1,e2\nt1,0.1,0.2\nt2,0.2,0.3\n")
    out = tmp_path / "sel.safetensors"
    argv = ["selector", action, "--errors", str(errors), "--tasks", str(tmp_path / "absent"), *extra]
    code, err = _run(capsys, argv + (["--out", str(out)] if action == "train" else []))
    assert code == 2 and expected in err and err.count("\n") == 1, err
    assert not out.exists()
