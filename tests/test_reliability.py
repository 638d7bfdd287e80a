"""Hostile and careless inputs: nothing outside the hub is touched, no secret echoed, no hang, no traceback.

One test per class of failure; each failed on the code before the fix.
"""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from t2v_hub.cli.main import main
from t2v_hub.embedding import Task2VecEmbedding
from t2v_hub.errors import EmbeddingError, HubError, ImageTooLargeError, RecommendError, SelectorError
from t2v_hub.hub import LocalHub, list_experts, push_embedding

REPO = "org/m"


def _repo(local_hub: LocalHub, make_embedding: Any) -> Path:
    local_hub.create_repo(REPO)
    push_embedding(local_hub, REPO, make_embedding(0))
    return local_hub.root / REPO


# -- files outside the hub ------------------------------------------------------------------------


def test_a_forged_journal_never_moves_files_from_outside(local_hub: LocalHub, make_embedding, tmp_path) -> None:
    d = _repo(local_hub, make_embedding)
    precious = tmp_path / "o" / "precious.txt"
    precious.parent.mkdir()
    precious.write_text("mine")
    rel = os.path.relpath(precious, d)
    for moves in ([[rel, "stolen.txt"]], [[".t2v/staging/" + "a" * 32 + "/0", "../escape.txt"]],
                  [[str(precious), "x.txt"]], [[None, "../../o/precious.txt"]]):
        (d / ".t2v" / "journal.json").write_text(json.dumps({"moves": moves}))
        with pytest.warns(RuntimeWarning, match=r"org/m left out.*journal.json names a path outside"):
            experts, _ = list_experts(local_hub)  # a read-only listing
        assert experts == []
        assert precious.read_text() == "mine" and not (d / "stolen.txt").exists()
        assert not (d.parent / "escape.txt").exists()
    (d / ".t2v" / "journal.json").write_text('{"moves": [["')  # truncated
    with pytest.raises(HubError, match=r"journal.json is damaged.*delete it"):
        local_hub.read_card(REPO)


def test_symlinked_metadata_folder_is_refused(local_hub: LocalHub, make_embedding, tmp_path) -> None:
    d = _repo(local_hub, make_embedding)
    outside = tmp_path / "outside"
    (outside / "staging").mkdir(parents=True)
    (outside / "staging" / "keep").write_text("x")
    import shutil

    shutil.rmtree(d / ".t2v")
    (d / ".t2v").symlink_to(outside, target_is_directory=True)
    with pytest.warns(RuntimeWarning, match="symbolic link"):
        experts, _ = list_experts(local_hub)
    assert experts == []
    assert (outside / "staging" / "keep").exists() and not (outside / "lock").exists()


def test_index_force_replaces_only_an_index(tmp_path, capsys) -> None:
    from t2v_hub.selection.index import write_index

    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"123")
    with pytest.raises(RecommendError, match="not an expert index.*refusing to replace it"):
        write_index(mine, {}, ["a"], [""], [""], [torch.ones(1, 4)], torch.ones(4), overwrite=True)
    assert (mine / "holiday.jpg").read_bytes() == b"123"


def _index(tmp_path: Path) -> Path:
    from t2v_hub.selection.index import write_index

    space = {"probe": "p", "weights_sha256": "w", "layout_hash": "l", "dim": "4", "method": "montecarlo"}
    return write_index(tmp_path / "idx", space, ["a", "b"], ["", ""], ["", ""],
                       [torch.rand(2, 4) + 0.1], torch.ones(4))


def test_index_manifest_cannot_point_outside_or_lie(tmp_path) -> None:
    from t2v_hub.selection.index import INDEX_FILE, load_index

    idx = _index(tmp_path)
    good = json.loads((idx / INDEX_FILE).read_text())
    bads = [
        {**good, "shards": [{"file": "../outside/evil.safetensors", "rows": 2}]},
        {**good, "shards": [{"file": "/etc/passwd", "rows": 2}]},
        {k: v for k, v in good.items() if k != "ids"},
        {**good, "dim": "4"},
        {**good, "shards": "experts-00000.safetensors"},
        [1, 2],
    ]
    for bad in bads:
        (idx / INDEX_FILE).write_text(json.dumps(bad))
        with pytest.raises(RecommendError, match="index|rebuild"):
            load_index(idx)
    (idx / INDEX_FILE).write_text(json.dumps(good))
    shard = idx / "experts-00000.safetensors"
    raw = bytearray(shard.read_bytes())
    raw[-4:] = torch.tensor([float("nan")]).numpy().tobytes()  # NaN injected into the last value
    shard.write_bytes(bytes(raw))
    from t2v_hub.selection.index import rank_index

    target = Task2VecEmbedding.create(torch.rand(4) + 0.1, probe="p", weights_sha256="w", layout_hash="l",
                                      method="montecarlo")
    with pytest.raises(RecommendError, match=r"experts-00000.safetensors .* NaN or Inf \(row 1, expert 'b'\)"):
        rank_index(target, load_index(idx), trivial=torch.ones(4))
    with pytest.raises(RecommendError, match="is a file"):
        load_index(shard)


# -- secrets, hangs -----------------------------------------------------------------------------------


def test_unrecognised_arguments_never_echo_a_secret(capsys) -> None:
    secret = "hf_" + "Ab3" * 10
    for argv in (["recommend", "--dataset", "d", "--bogus", secret], ["embed", "--dataset", "d", "--out", "o",
                                                                      f"--api-key={secret}"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert secret not in err and err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_fifo_in_a_repo_does_not_hang_a_listing(local_hub: LocalHub, make_embedding) -> None:
    d = _repo(local_hub, make_embedding)
    os.mkfifo(d / "pipe")
    t = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="not regular files.*pipe"):
        experts, _ = list_experts(local_hub)
    assert len(experts) == 1 and time.perf_counter() - t < 10


@pytest.mark.hub
def test_retry_after_is_capped_and_said(hub_server, hf_hub, monkeypatch, capsys) -> None:
    import t2v_hub.hub.hf as hf

    monkeypatch.setattr(hf, "MAX_WAIT_S", 1)
    hf_hub.create_repo(REPO)
    hub_server.fail("429", path=rf"^/api/models/{REPO}$", times=1, seconds=3600)
    t = time.perf_counter()
    assert hf_hub.read_card(REPO) is not None
    assert time.perf_counter() - t < 30
    assert "asked to wait 3600s" in capsys.readouterr().err


@pytest.mark.hub
def test_a_listing_that_paginates_forever_is_bounded(hub_server, hf_hub, make_embedding, monkeypatch) -> None:
    import t2v_hub.hub.hf as hf

    hf_hub.create_repo(REPO)
    push_embedding(hf_hub, REPO, make_embedding(0))
    hub_server.endless_listing = True
    monkeypatch.setattr(hf, "MAX_LISTED_MODELS", 20)
    with pytest.warns(RuntimeWarning, match="cut after 20 models"):
        rows = hf_hub.list_models(filter=["task2vec"])
    assert len(rows) == 20
    monkeypatch.setattr(hf, "MAX_LISTED_MODELS", 10**9)
    monkeypatch.setattr(hf, "CALL_BUDGET_S", 1.0)
    with pytest.raises(HubError, match="gave up after 1s"):
        hf_hub.list_models(filter=["task2vec"])


# -- images, embeddings, matrices --------------------------------------------------------------------


def _jpeg_claiming(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[i + 5 : i + 7] = h.to_bytes(2, "big")
    data[i + 7 : i + 9] = w.to_bytes(2, "big")
    return bytes(data)


def test_a_jpeg_header_claiming_billions_of_pixels_is_refused_before_decoding() -> None:
    from t2v_hub.data.images import Preprocessor

    data = _jpeg_claiming(65500, 65500)
    assert len(data) < 1000
    cfg = {"input_size": (3, 16, 16), "interpolation": "bilinear", "crop_pct": 1.0, "mean": (0.5,) * 3,
           "std": (0.5,) * 3}
    with pytest.raises(ImageTooLargeError, match="65500x65500"):
        Preprocessor(cfg)(data)


@pytest.mark.parametrize(("tensor", "match"), [
    (torch.rand(8, dtype=torch.float64), "stored as float64"),
    (torch.ones(8, dtype=torch.int8), "stored as int8"),
    (torch.rand(8).to(torch.bfloat16), "stored as bfloat16"),
    (torch.tensor([0.1, -0.2] * 4), "negative entries"),
    (torch.zeros(8), "all zero"),
    (torch.tensor([float("nan")] * 8), "NaN"),
])
def test_embeddings_are_validated_on_load(tmp_path, tensor: torch.Tensor, match: str) -> None:
    from safetensors.torch import save_file

    meta = {"format_version": "1", "probe": "p", "weights_sha256": "w", "layout_hash": "l", "dim": "8",
            "method": "montecarlo"}
    path = tmp_path / "e.safetensors"
    save_file({"embedding": tensor}, str(path), metadata=meta)
    with pytest.raises(EmbeddingError, match=match):
        Task2VecEmbedding.load(path)


@pytest.mark.parametrize("cell", ["-0.2", "1e30", "1.5"])
def test_error_matrices_hold_errors_in_0_1(tmp_path, cell: str) -> None:
    from t2v_hub.selection.error_matrix import load_error_matrix

    p = tmp_path / "errors.csv"
    p.write_text(f"task,e1,e2\nt1,0.1,{cell}\nt2,0.2,0.3\n")
    with pytest.raises(SelectorError, match=r"outside \[0, 1\]"):
        load_error_matrix(p)
    p.write_text("task,e1,e2\nt1,0.1,0.2\n")
    assert load_error_matrix(p).errors.shape == (1, 2)
    j = tmp_path / "errors.json"
    j.write_text('{"tasks": ["t1"], "experts": ["e1"], "errors": [[0.1')  # truncated
    with pytest.raises(SelectorError, match="not valid JSON"):
        load_error_matrix(j)


def test_failed_attach_leaves_no_metadata_behind(local_hub: LocalHub, make_embedding, tmp_path, capsys) -> None:
    d = local_hub.root / "org" / "fresh"
    d.mkdir(parents=True)
    (d / "README.md").write_text("---\nbroken: [unclosed\n---\n")
    f = tmp_path / "e.safetensors"
    make_embedding(0).save(f)
    assert main(["attach", "--model", "org/fresh", "--embedding", str(f), "--hub", str(local_hub.root)]) == 2
    assert not (d / ".t2v").exists()


def test_recommend_index_and_hub_conflict(tmp_path, capsys) -> None:
    idx = _index(tmp_path)
    assert main(["recommend", "--dataset", "x", "--index", str(idx), "--hub", str(tmp_path)]) == 2
    assert "alternatives" in capsys.readouterr().err


def test_an_unreachable_hub_fails_fast_and_says_so(monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    t = time.perf_counter()
    assert main(["embed", "--dataset", "someone/data", "--out", "o.safetensors", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach http://127.0.0.1:9" in err and "not found" not in err and len(err.splitlines()) == 1
    assert time.perf_counter() - t < 10


@pytest.mark.hub
@pytest.mark.parametrize("path", ["/commit/", "/preupload/"])
def test_a_rate_limited_commit_waits_the_capped_time_and_commits_once(hub_server, hf_hub, make_embedding,
                                                                       monkeypatch, capsys, path) -> None:
    """The caps hold for writes too: a 429 asking for an hour on the commit (or its preupload check)
    is waited for MAX_WAIT_S, said on stderr, and the retry lands exactly one commit."""
    import t2v_hub.hub.hf as hf

    monkeypatch.setattr(hf, "MAX_WAIT_S", 1)
    hf_hub.create_repo(REPO)
    hub_server.fail("429", path=path, times=1, seconds=3600)
    t = time.perf_counter()
    res = push_embedding(hf_hub, REPO, make_embedding(0), backoff=0)
    assert time.perf_counter() - t < 30 and res.changed
    assert "asked to wait 3600s" in capsys.readouterr().err
    log = hub_server.hub.root / REPO / ".t2v" / "log.jsonl"
    assert len(list_experts(hf_hub)[0]) == 1 and len(log.read_text().splitlines()) == 1  # one commit, not two


@pytest.mark.hub
def test_a_commit_that_is_rate_limited_forever_ends_within_the_budget(hub_server, hf_hub, make_embedding,
                                                                      monkeypatch) -> None:
    """A server that answers every commit with 429 and a long Retry-After cannot hold the command past
    one call's budget, and the repo is left as it was."""
    import t2v_hub.hub.hf as hf

    monkeypatch.setattr(hf, "MAX_WAIT_S", 1)
    monkeypatch.setattr(hf, "CALL_BUDGET_S", 3.0)
    hf_hub.create_repo(REPO)
    before = hub_server.hub.read_card(REPO)
    hub_server.fail("429", path="/commit/", times=10_000, seconds=3600)
    t = time.perf_counter()
    with pytest.raises(HubError, match=r"429 \(rate limited\).*repository is unchanged \(checked\)"):
        push_embedding(hf_hub, REPO, make_embedding(0), backoff=0)
    assert time.perf_counter() - t < 30
    assert hub_server.hub.read_card(REPO) == before and not (hub_server.hub.root / REPO / ".t2v" / "log.jsonl").exists()
