"""`t2v-hub attach` and `t2v-hub experts` end to end, on a local hub and on the test server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hub_server import TOKEN, HubServer

from t2v_hub.cli.main import main
from t2v_hub.errors import ConcurrentUpdateError
from t2v_hub.hub import LocalHub
from t2v_hub.hub.card import parse_card

REPO = "org/model-a"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def log_len(root: Path, repo: str = REPO) -> int:
    log = root / repo / ".t2v" / "log.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.fixture
def emb_file(tmp_path: Path, make_embedding) -> Path:
    return make_embedding(0, probe="tf_efficientnet_lite0").save(tmp_path / "task.safetensors")


def test_attach_and_experts_on_local_hub(capsys, local_hub: LocalHub, emb_file: Path, tmp_path: Path, make_embedding) -> None:
    local_hub.create_repo(REPO)
    hub = str(local_hub.root)
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub)
    assert code == 0 and out.strip().startswith("file://") and "committed to org/model-a" in err
    assert log_len(local_hub.root) == 1
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub)
    assert code == 0 and "nothing was committed" in err and log_len(local_hub.root) == 1  # idempotent

    other = make_embedding(1, probe="resnet18").save(tmp_path / "other.safetensors")
    local_hub.create_repo("org/model-b")
    assert run(capsys, "attach", "--model", "org/model-b", "--embedding", str(other), "--hub", hub)[0] == 0

    code, out, err = run(capsys, "experts", "--hub", hub, "--format", "json")
    rows = json.loads(out)
    assert code == 0 and {r["repo_id"] for r in rows} == {REPO, "org/model-b"}
    assert {r["probe"] for r in rows} == {"tf_efficientnet_lite0", "resnet18"} and err == ""
    code, out, err = run(capsys, "experts", "--hub", hub, "--probe", "resnet18")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:3] == ["REPO_ID", "PROBE", "METHOD"] and len(lines) == 2
    assert "org/model-b" in lines[1] and f"warning: skipped {REPO}: no embedding for resnet18" in err


def test_attach_dry_run_writes_nothing(capsys, local_hub: LocalHub, emb_file: Path) -> None:
    local_hub.create_repo(REPO)
    before = local_hub.read_card(REPO)
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", str(local_hub.root), "--dry-run")
    assert code == 0 and out.startswith("dry run: one commit to org/model-a")
    assert "write task2vec/tf_efficientnet_lite0.safetensors" in out and "+++ b/README.md" in out
    assert local_hub.read_card(REPO) == before and log_len(local_hub.root) == 0


def test_attach_errors_are_one_line_and_exit_2(capsys, local_hub: LocalHub, emb_file: Path, monkeypatch) -> None:
    hub = str(local_hub.root)
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub)
    assert code == 2 and out == "" and err.startswith("error: repository 'org/model-a' not found")
    local_hub.create_repo(REPO)
    for argv, msg in (
        (["--probe", "resnet18"], "does not match"),
        (["--dataset", "x"], "exactly one of"),
    ):
        code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub, *argv)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "attach", "--model", "../escape", "--embedding", str(emb_file), "--hub", hub)
    assert code == 2 and "invalid repo id" in err
    code, _, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", str(local_hub.root / "nope"))
    assert code == 2 and "does not exist" in err
    (local_hub.root / REPO / "README.md").write_text("---\nlicense: [broken\n---\n")
    code, _, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub)
    assert code == 2 and "not valid safe YAML" in err

    def conflict(*a: Any, **k: Any) -> Any:
        raise ConcurrentUpdateError("org/model-a changed since it was read; nothing was written")

    (local_hub.root / REPO / "README.md").unlink()
    monkeypatch.setattr(LocalHub, "commit", conflict)
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub)
    assert code == 2 and out == "" and "changed since it was read" in err


def test_attach_dataset_computes_then_pushes(capsys, local_hub: LocalHub, make_embedding, monkeypatch) -> None:
    import t2v_hub.task2vec as t2v

    seen: dict[str, Any] = {}

    def fake_embed(dataset: Any, probe: str, method: str, **kw: Any) -> Any:
        seen.update(dataset=dataset, probe=probe, method=method, **kw)
        return make_embedding(0, probe=probe, method=method, dataset_id=dataset)

    monkeypatch.setattr(t2v, "embed", fake_embed)
    code, _, err = run(capsys, "attach", "--model", REPO, "--dataset", "fashion_mnist", "--hub", str(local_hub.root))
    assert code == 2 and "not found" in err and seen == {}  # checked before computing anything
    local_hub.create_repo(REPO)
    argv = ["attach", "--model", REPO, "--dataset", "fashion_mnist", "--max-samples", "50", "--seed", "3"]
    code, out, err = run(capsys, *argv, "--method", "empirical", "--hub", str(local_hub.root))
    assert code == 0, err
    assert seen["dataset"] == "fashion_mnist" and seen["max_samples"] == 50 and seen["seed"] == 3
    assert seen["probe"] == "tf_efficientnet_lite0" and seen["method"] == "empirical"
    entry = parse_card((local_hub.root / REPO / "README.md").read_text()).metadata["task2vec"][0]
    assert entry["file"] == "task2vec/tf_efficientnet_lite0.empirical.safetensors" and entry["dataset"] == "fashion_mnist"


@pytest.mark.hub
def test_attach_and_experts_through_the_server(capsys, hub_server: HubServer, emb_file: Path, monkeypatch) -> None:
    from t2v_hub.hub.hf import HfHub

    HfHub(endpoint=hub_server.url, token=TOKEN).create_repo(REPO)
    hub_server.hub.create_repo("org/broken")
    (hub_server.hub.root / "org/broken/README.md").write_text(
        "---\ntags: [task2vec]\ntask2vec:\n- {probe: tf_efficientnet_lite0, file: task2vec/x.safetensors, sha256: '"
        + "0" * 64
        + "'}\n---\n"
    )
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file), "--hub", hub_server.url, "--token", TOKEN)
    assert code == 0, err
    assert out.strip() == f"{hub_server.url}/{REPO}/commit/{hub_server.hub.read_card(REPO).revision}"
    assert TOKEN not in out + err
    # HF_ENDPOINT + HF_TOKEN instead of flags: the usual places.
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    code, out, err = run(capsys, "attach", "--model", REPO, "--embedding", str(emb_file))
    assert code == 0 and "nothing was committed" in err
    code, out, err = run(capsys, "experts", "--format", "json", "--filter", "task2vec")
    rows = json.loads(out)
    assert code == 0 and [r["repo_id"] for r in rows] == [REPO] and rows[0]["url"] == f"{hub_server.url}/{REPO}"
    assert "warning: skipped org/broken" in err and "missing" in err
    code, out, err = run(capsys, "experts", "--hub", "hf", "--endpoint", hub_server.url, "--probe", "resnet18")
    assert code == 0 and len(out.splitlines()) == 1 and "no experts found" in err


def test_attach_create_repo_from_the_cli(capsys, local_hub: LocalHub, emb_file: Path) -> None:
    hub = str(local_hub.root)
    code, _, err = run(capsys, "attach", "--model", "org/new", "--embedding", str(emb_file), "--hub", hub)
    assert code == 2 and "pass --create-repo to create it" in err  # the library's create_repo=True, as a flag
    assert not (local_hub.root / "org" / "new").exists()
    code, out, _ = run(capsys, "attach", "--model", "org/new", "--embedding", str(emb_file), "--hub", hub,
                       "--create-repo")
    assert code == 0 and local_hub.repo_exists("org/new") and out.strip()


def test_attach_warns_about_random_init_probes(capsys, local_hub: LocalHub, tmp_path: Path, make_embedding) -> None:
    f = tmp_path / "r.safetensors"
    make_embedding(0, weights="random(seed=0)").save(f)
    local_hub.create_repo(REPO)
    code, _, err = run(capsys, "attach", "--model", REPO, "--embedding", str(f), "--hub", str(local_hub.root))
    assert code == 0 and "random-init probe" in err


def test_new_cards_carry_the_hub_fields(capsys, local_hub: LocalHub, tmp_path: Path, make_embedding) -> None:
    from huggingface_hub import ModelCard

    f = tmp_path / "e.safetensors"
    make_embedding(0, dataset_id="user/fashion").save(f)
    local_hub.create_repo("org/withweights")
    (local_hub.root / "org/withweights" / "config.json").write_text('{"architecture": "resnet18"}')
    code, _, _ = run(capsys, "attach", "--model", "org/withweights", "--embedding", str(f), "--hub", str(local_hub.root),
                     "--license", "apache-2.0", "--base-model", "timm/resnet18.a1_in1k")
    assert code == 0
    data = ModelCard.load(local_hub.root / "org/withweights" / "README.md").data.to_dict()
    assert data["library_name"] == "timm" and data["datasets"] == ["user/fashion"]
    assert data["license"] == "apache-2.0" and data["base_model"] == "timm/resnet18.a1_in1k"
    assert "task2vec" in data["tags"] and data["task2vec"][0]["dataset"] == "user/fashion"
