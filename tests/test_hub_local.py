"""LocalHub and the hub API: layout, idempotence, concurrency, crashes, hostile repos and files."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save as st_save

from t2v_hub.errors import (
    CardError,
    ConcurrentUpdateError,
    EmbeddingError,
    HubError,
    IntegrityError,
    RepoNotFoundError,
)
from t2v_hub.hub import (
    LocalHub,
    embedding_bytes,
    embedding_path,
    get_hub,
    list_experts,
    load_embedding,
    probe_slug,
    push_embedding,
)
from t2v_hub.hub import local as local_mod
from t2v_hub.hub.base import HubFileNotFoundError
from t2v_hub.hub.card import parse_card

REPO = "org/model-a"


def commits(hub: LocalHub, repo: str) -> list[dict[str, Any]]:
    log = hub.root / repo / ".t2v" / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def card_meta(hub: LocalHub, repo: str) -> dict[str, Any]:
    return parse_card((hub.root / repo / "README.md").read_text(encoding="utf-8")).metadata


def set_entry(hub: LocalHub, repo: str, **changes: Any) -> None:
    """Edit the first task2vec entry by hand, as a careless (or hostile) repo owner might."""
    import yaml

    readme = hub.root / repo / "README.md"
    p = parse_card(readme.read_text())
    p.metadata["task2vec"][0].update(changes)
    readme.write_text("---\n" + yaml.safe_dump(p.metadata, sort_keys=False) + "---\n" + p.body)


# -- layout, round trip, idempotence ------------------------------------------------------


def test_push_load_list_round_trip(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    emb = make_embedding(0, probe="hf-hub:org/x", dataset_revision="abc123")
    res = push_embedding(local_hub, REPO, emb)
    assert res.changed and res.path == "task2vec/hf-hub--org--x.safetensors"
    stored = local_hub.root / REPO / res.path
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == res.sha256
    meta = card_meta(local_hub, REPO)
    assert "task2vec" in meta["tags"]
    (entry,) = meta["task2vec"]
    assert entry == res.entry
    assert set(entry) >= {"probe", "file", "sha256", "dim", "method", "dataset", "dataset_revision", "num_samples", "norm", "layout_hash"}
    assert entry["dataset"] == "dataset-0" and entry["dataset_revision"] == "abc123" and entry["dim"] == 16
    back = load_embedding(local_hub, REPO, "hf-hub:org/x")
    assert torch.equal(back.vector, emb.vector) and back.metadata == emb.metadata
    experts, skipped = list_experts(local_hub)
    assert skipped == [] and [e.repo_id for e in experts] == [REPO]
    assert experts[0].task == "dataset-0" and experts[0].url.startswith("file://") and experts[0].entry == entry


def test_same_embedding_twice_makes_no_commit(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    emb = make_embedding(1)
    first = push_embedding(local_hub, REPO, emb)
    again = push_embedding(local_hub, REPO, emb)
    reloaded = push_embedding(local_hub, REPO, load_embedding(local_hub, REPO))  # a fresh object, same content
    assert first.changed and not again.changed and not reloaded.changed
    assert len(commits(local_hub, REPO)) == 1
    assert embedding_bytes(emb) == embedding_bytes(emb)  # deterministic bytes, unlike safetensors' header order


def test_probes_and_methods_coexist_and_replace_their_own_entry(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    push_embedding(local_hub, REPO, make_embedding(0, probe="resnet18"))
    push_embedding(local_hub, REPO, make_embedding(1, probe="resnet18", method="variational"))
    push_embedding(local_hub, REPO, make_embedding(2, probe="tf_efficientnet_lite0"))
    newer = make_embedding(3, probe="resnet18")
    push_embedding(local_hub, REPO, newer)
    files = sorted(e["file"] for e in card_meta(local_hub, REPO)["task2vec"])
    assert files == [
        "task2vec/resnet18.safetensors",
        "task2vec/resnet18.variational.safetensors",
        "task2vec/tf_efficientnet_lite0.safetensors",
    ]
    assert torch.equal(load_embedding(local_hub, REPO, "resnet18").vector, newer.vector)  # montecarlo preferred
    assert load_embedding(local_hub, REPO, "resnet18", method="variational").method == "variational"
    experts, _ = list_experts(local_hub, probe="resnet18", method="montecarlo")
    assert len(experts) == 1
    experts, _ = list_experts(local_hub)
    assert len(experts) == 3


def test_probe_slugs() -> None:
    assert probe_slug("tf_efficientnet_lite0") == "tf_efficientnet_lite0"
    assert probe_slug("hf-hub:org/x") == "hf-hub--org--x"
    assert probe_slug("local-dir:/a b/c") == "local-dir----a_b--c"
    assert probe_slug("../../etc") == "_etc"
    assert len(probe_slug("x" * 500)) < 130
    assert embedding_path("p", "montecarlo") == "task2vec/p.safetensors"
    assert embedding_path("p", "empirical") == "task2vec/p.empirical.safetensors"


def test_slug_collision_gets_a_distinct_file(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    a = push_embedding(local_hub, REPO, make_embedding(0, probe="org/x"))
    b = push_embedding(local_hub, REPO, make_embedding(1, probe="org:x"))
    assert a.path != b.path and len(card_meta(local_hub, REPO)["task2vec"]) == 2
    assert load_embedding(local_hub, REPO, "org/x").probe == "org/x"


def test_dry_run_writes_nothing(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    before = local_hub.read_card(REPO)
    res = push_embedding(local_hub, REPO, make_embedding(0), dry_run=True)
    assert res.changed and res.dry_run and res.commit_id is None and "+tags:" in res.card_diff()
    assert local_hub.read_card(REPO) == before and not (local_hub.root / REPO / "task2vec").exists()


def test_a_dry_run_with_create_repo_plans_the_new_repo_and_creates_nothing(local_hub: LocalHub, make_embedding,
                                                                           capsys) -> None:
    from t2v_hub.cli.main import main

    res = push_embedding(local_hub, "org/fresh", make_embedding(0), dry_run=True, create_repo=True)
    assert res.changed and res.dry_run and res.parent == "" and res.card_before is None
    assert "would be created first" in res.note and "+tags:" in res.card_diff()
    assert not local_hub.repo_exists("org/fresh") and not (local_hub.root / "org").exists()
    with pytest.raises(RepoNotFoundError, match="pass create_repo=True"):
        push_embedding(local_hub, "org/fresh", make_embedding(0), dry_run=True)
    emb = local_hub.root.parent / "e.safetensors"
    make_embedding(0).save(emb)
    capsys.readouterr()
    assert main(["attach", "--model", "org/fresh", "--hub", str(local_hub.root), "--embedding", str(emb),
                 "--create-repo", "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "org/fresh would be created first" in out and "(a new repository), nothing written" in out
    assert not (local_hub.root / "org").exists()
    # Then for real: the plan was the commit.
    done = push_embedding(local_hub, "org/fresh", make_embedding(0), create_repo=True)
    assert done.commit_id and local_hub.read_card("org/fresh").text == res.card_after


def test_create_pr_leaves_main_alone(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    before = local_hub.read_card(REPO)
    res = push_embedding(local_hub, REPO, make_embedding(0), create_pr=True)
    assert res.pr_url and local_hub.read_card(REPO) == before
    pr = Path(res.pr_url.removeprefix("file://"))
    assert (pr / "files" / res.path).is_file() and (pr / "files" / "README.md").is_file()


def test_missing_repo_and_hub_folder(local_hub: LocalHub, make_embedding, tmp_path: Path) -> None:
    with pytest.raises(RepoNotFoundError):
        push_embedding(local_hub, "org/absent", make_embedding(0))
    with pytest.raises(HubError, match="does not exist"):
        get_hub(str(tmp_path / "nope"))
    with pytest.raises(HubError, match="endpoint"):
        get_hub(str(tmp_path), endpoint="http://x")
    assert isinstance(get_hub(str(tmp_path)), LocalHub)
    (local_hub.root / "org" / "by-hand").mkdir(parents=True)  # mkdir -p is enough for a repo
    assert local_hub.repo_exists("org/by-hand") and not local_hub.repo_exists("org")


@pytest.mark.parametrize(("spec", "expected"), [
    ("ftp://host/x", "the ftp:// scheme is not supported"),
    ("s3://bucket/hub", "the s3:// scheme is not supported"),
    ("https://", "has no valid host"),
    ("http:///x", "has no valid host"),
    ("https://exa mple.com", "has no valid host"),
])
def test_hub_specs_that_name_no_hub_are_refused_before_any_request(spec, expected) -> None:
    with pytest.raises(HubError, match=expected):
        get_hub(spec)


def test_hf_endpoint_variable_without_a_host_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://")
    with pytest.raises(HubError, match="'https://' has no valid host"):
        get_hub("hf")


# -- concurrency ---------------------------------------------------------------------------


def test_stale_parent_is_refused_and_nothing_overwritten(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    (local_hub.root / REPO / "README.md").write_text("---\nlicense: mit\n---\nv1\n")
    stale = local_hub.read_card(REPO)

    class Racy(LocalHub):
        def read_card(self, repo_id: str):  # someone edits the card right after our read
            state = super().read_card(repo_id)
            (self.root / repo_id / "README.md").write_text("---\nlicense: mit\n---\nv2 by someone else\n")
            return state

    with pytest.raises(ConcurrentUpdateError):
        push_embedding(Racy(local_hub.root), REPO, make_embedding(0))
    assert (local_hub.root / REPO / "README.md").read_text().endswith("v2 by someone else\n")
    assert not (local_hub.root / REPO / "task2vec").exists()
    with pytest.raises(ConcurrentUpdateError):
        local_hub.commit(REPO, {"x.txt": b"x"}, "m", parent_commit=stale.revision)


def _attach(root: str, seed: int, probe: str, emb: Any, barrier: Any, out: Any) -> None:
    hub = LocalHub(root)
    if barrier is not None:
        # Both processes read the same revision before either commits: a guaranteed race.
        original = hub.read_card

        def read_then_wait(repo_id: str):
            state = original(repo_id)
            barrier.wait(timeout=60)
            return state

        hub.read_card = read_then_wait  # type: ignore[method-assign]
    try:
        push_embedding(hub, REPO, emb)
        out.put((probe, "ok"))
    except ConcurrentUpdateError:
        out.put((probe, "conflict"))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put((probe, f"error {type(exc).__name__}: {exc}"))


@pytest.mark.distributed
@pytest.mark.parametrize("forced_race", [True, False])
def test_processes_attaching_at_once_lose_no_update(local_hub: LocalHub, make_embedding, forced_race: bool) -> None:
    local_hub.create_repo(REPO)
    (local_hub.root / REPO / "README.md").write_text("---\nlicense: mit\n---\n# Model\n")
    ctx = mp.get_context("fork")
    n = 2 if forced_race else 4
    barrier = ctx.Barrier(n) if forced_race else None
    out = ctx.Queue()
    probes = [f"probe{i}" for i in range(n)]
    procs = [
        ctx.Process(target=_attach, args=(str(local_hub.root), i, p, make_embedding(i, probe=p), barrier, out))
        for i, p in enumerate(probes)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    results = dict(out.get(timeout=5) for _ in procs)
    assert all(v in ("ok", "conflict") for v in results.values()), results
    ok = {p for p, v in results.items() if v == "ok"}
    if forced_race:
        assert len(ok) == 1, results  # one wins, the other is refused cleanly
    assert ok, results
    meta = card_meta(local_hub, REPO)
    assert {e["probe"] for e in meta["task2vec"]} == ok  # every success is there, nothing else half-written
    assert meta["license"] == "mit"
    for probe in ok:
        load_embedding(local_hub, REPO, probe)  # files match their card entries
    assert len(commits(local_hub, REPO)) == len(ok)


# -- crashes -------------------------------------------------------------------------------


def _commit_and_die(root: str, files: dict[str, bytes], parent: str) -> None:
    calls = {"n": 0}
    real_replace = os.replace

    def replace_then_crash(src: Any, dst: Any) -> None:
        if str(dst).endswith(("README.md", ".safetensors")):
            calls["n"] += 1
            if calls["n"] == 2:
                os._exit(9)  # killed between the two renames of one commit
        real_replace(src, dst)

    local_mod.os.replace = replace_then_crash  # type: ignore[assignment]
    LocalHub(root).commit(REPO, files, "crashing commit", parent_commit=parent)


def test_crash_mid_commit_is_rolled_forward(local_hub: LocalHub) -> None:
    local_hub.create_repo(REPO)
    local_hub.commit(REPO, {"README.md": b"old card\n", "task2vec/p.safetensors": b"old"}, "v1", parent_commit=None)
    parent = local_hub.read_card(REPO).revision
    new = {"README.md": b"new card\n", "task2vec/p.safetensors": b"new"}
    proc = mp.get_context("fork").Process(target=_commit_and_die, args=(str(local_hub.root), new, parent))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 9
    d = local_hub.root / REPO
    assert (d / ".t2v" / "journal.json").exists()  # half applied on disk, journal still there
    state = local_hub.read_card(REPO)  # the next access finishes the commit
    assert state.text == "new card\n" and (d / "task2vec/p.safetensors").read_bytes() == b"new"
    assert not (d / ".t2v" / "journal.json").exists() and not (d / ".t2v" / "staging").exists()


def test_error_before_journal_leaves_repo_unchanged(local_hub: LocalHub, monkeypatch) -> None:
    local_hub.create_repo(REPO)
    local_hub.commit(REPO, {"README.md": b"old\n"}, "v1", parent_commit=None)
    before = local_hub.read_card(REPO)

    def no_disk(path: Any, data: bytes) -> Path:
        if str(path).endswith("journal.json"):
            raise OSError(28, "No space left on device")
        return real(path, data)

    real = local_mod.atomic_write_bytes
    monkeypatch.setattr(local_mod, "atomic_write_bytes", no_disk)
    with pytest.raises(HubError, match="nothing was committed"):
        local_hub.commit(REPO, {"README.md": b"new\n", "a.bin": b"a"}, "v2", parent_commit=before.revision)
    monkeypatch.undo()
    assert local_hub.read_card(REPO) == before and not (local_hub.root / REPO / "a.bin").exists()


def test_push_survives_an_error_between_renames(local_hub: LocalHub, make_embedding, monkeypatch) -> None:
    local_hub.create_repo(REPO)
    real_replace, calls = os.replace, {"n": 0}

    def flaky(src: Any, dst: Any) -> None:
        if "/.t2v/" not in str(dst):  # a rename into the working tree, not staging
            calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(local_mod.os, "replace", flaky)
    res = push_embedding(local_hub, REPO, make_embedding(0))
    monkeypatch.undo()
    assert "landed" in res.note  # reconciled: the journal finished the commit on the next read
    load_embedding(local_hub, REPO)


# -- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../evil", "org/../../evil", "/abs/path", "a/b/c", "org/..", ".hidden", "", "x" * 97, "a b"])
def test_bad_repo_ids_are_refused(local_hub: LocalHub, make_embedding, bad: str) -> None:
    with pytest.raises(HubError, match="repo id"):
        local_hub.create_repo(bad)
    with pytest.raises(HubError, match="repo id"):
        push_embedding(local_hub, bad, make_embedding(0))
    assert not (local_hub.root.parent / "evil").exists()


def test_symlinks_are_not_followed(local_hub: LocalHub, tmp_path: Path) -> None:
    local_hub.create_repo(REPO)
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    d = local_hub.root / REPO
    (d / "task2vec").mkdir()
    (d / "task2vec" / "p.safetensors").symlink_to(secret)
    with pytest.raises(HubError, match="symbolic link"):
        local_hub.download(REPO, "task2vec/p.safetensors", max_bytes=1000)
    with pytest.raises(HubError, match="symbolic link"):
        local_hub.commit(REPO, {"task2vec/p.safetensors": b"x"}, "m", parent_commit=None)
    assert secret.read_text() == "secret"
    (d / "README.md").symlink_to(secret)
    with pytest.raises(CardError, match="symbolic link"):
        local_hub.read_card(REPO)


def test_bad_cards_are_refused_and_left_unchanged(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    readme = local_hub.root / REPO / "README.md"
    for text in (
        "---\nlicense: [unclosed\n---\nbody\n",
        "---\nx: !!python/object/apply:os.system ['touch pwned']\n---\n",
        "---\ntask2vec: not-a-list\n---\n",
    ):
        readme.write_text(text)
        with pytest.raises(CardError):
            push_embedding(local_hub, REPO, make_embedding(0))
        assert readme.read_text() == text and not (local_hub.root / REPO / "task2vec").exists()
    assert not Path("pwned").exists()
    readme.write_bytes(b"---\nlicense: mit\n---\n\xff\xfe not utf-8")
    with pytest.raises(CardError, match="UTF-8"):
        push_embedding(local_hub, REPO, make_embedding(0))


def test_ten_megabyte_readme_keeps_its_body(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    body = ("A long model card line with some text. " * 3 + "\n") * 90_000
    text = "---\nlicense: mit\n---\n" + body
    assert len(text) >= 10_000_000
    (local_hub.root / REPO / "README.md").write_text(text)
    push_embedding(local_hub, REPO, make_embedding(0))
    after = (local_hub.root / REPO / "README.md").read_text()
    assert parse_card(after).body.startswith(body) and card_meta(local_hub, REPO)["license"] == "mit"


def _attach_then_tamper(hub: LocalHub, make_embedding, repo: str, data: bytes | None, fix_card: bool) -> None:
    hub.create_repo(repo)
    res = push_embedding(hub, repo, make_embedding(0))
    f = hub.root / repo / res.path
    if data is None:
        f.unlink()
    else:
        f.write_bytes(data)
        if fix_card:  # the card's sha256 matches the bad bytes: only parsing can catch them
            set_entry(hub, repo, sha256=hashlib.sha256(data).hexdigest())


def _safetensors(tensors: dict[str, torch.Tensor], emb: Any) -> bytes:
    return st_save(tensors, metadata=dict(emb.metadata))


def test_corrupt_or_mismatched_files_are_skipped_and_named(local_hub: LocalHub, make_embedding) -> None:
    emb = make_embedding(0)
    good = embedding_bytes(emb)
    cases = {
        "org/tampered": (good[:-4] + b"\x00\x00\x80\x7f", False),  # bytes no longer match the card
        "org/truncated": (good[: len(good) // 2], True),
        "org/extra-tensor": (_safetensors({"embedding": emb.vector, "extra": torch.zeros(2)}, emb), True),
        "org/missing-tensor": (_safetensors({"other": emb.vector}, emb), True),
        "org/not-safetensors": (pickle.dumps({"x": 1}), True),
        "org/missing-file": (None, False),
    }
    for repo, (data, fix) in cases.items():
        _attach_then_tamper(local_hub, make_embedding, repo, data, fix)
    local_hub.create_repo("org/good")
    push_embedding(local_hub, "org/good", emb)
    local_hub.create_repo("org/other-probe")
    push_embedding(local_hub, "org/other-probe", make_embedding(1, probe="resnet18"))

    experts, skipped = list_experts(local_hub, probe="test_efficientnet")
    assert [e.repo_id for e in experts] == ["org/good"]
    reasons = dict(skipped)
    assert set(reasons) == set(cases) | {"org/other-probe"}
    assert "sha256" in reasons["org/tampered"]
    assert "missing" in reasons["org/missing-file"]
    assert "no embedding for test_efficientnet" in reasons["org/other-probe"]
    for repo in ("org/truncated", "org/extra-tensor", "org/missing-tensor", "org/not-safetensors"):
        assert "unusable" in reasons[repo]
    with pytest.raises(IntegrityError):
        load_embedding(local_hub, "org/tampered")
    with pytest.raises(EmbeddingError):
        load_embedding(local_hub, "org/extra-tensor")
    with pytest.raises(HubFileNotFoundError):
        load_embedding(local_hub, "org/missing-file")


def test_card_that_lies_about_the_probe_is_skipped(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    push_embedding(local_hub, REPO, make_embedding(0, probe="resnet18"))
    set_entry(local_hub, REPO, probe="tf_efficientnet_lite0")
    experts, skipped = list_experts(local_hub, probe="tf_efficientnet_lite0")
    assert experts == [] and "card says probe" in skipped[0][1]


def test_incompatible_with_query_is_skipped(local_hub: LocalHub, make_embedding) -> None:
    local_hub.create_repo(REPO)
    push_embedding(local_hub, REPO, make_embedding(0, weights_sha256="other-weights"))
    experts, skipped = list_experts(local_hub, compatible_with=make_embedding(1))
    assert experts == [] and "incompatible" in skipped[0][1] and "weights_sha256" in skipped[0][1]


def test_nothing_is_ever_unpickled(local_hub: LocalHub, make_embedding, monkeypatch) -> None:
    local_hub.create_repo(REPO)
    push_embedding(local_hub, REPO, make_embedding(0))

    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("unpickling attempted")

    for mod, name in ((pickle, "loads"), (pickle, "load"), (torch, "load")):
        monkeypatch.setattr(mod, name, forbidden)
    load_embedding(local_hub, REPO)
    assert len(list_experts(local_hub)[0]) == 1


def test_card_pointing_outside_task2vec_is_refused(local_hub: LocalHub, make_embedding, tmp_path: Path) -> None:
    local_hub.create_repo(REPO)
    push_embedding(local_hub, REPO, make_embedding(0))
    for bad in ("../../../secret.safetensors", "task2vec/../../x.safetensors", "model.safetensors"):
        set_entry(local_hub, REPO, file=bad)
        experts, skipped = list_experts(local_hub)
        reason = skipped[0][1]
        assert experts == [] and ("malformed" in reason or "invalid path" in reason), reason
        with pytest.raises(HubError):
            load_embedding(local_hub, REPO)


def test_hostile_listing_is_skipped(local_hub: LocalHub) -> None:
    from t2v_hub.hub.base import ModelListing

    class Lying(LocalHub):
        def list_models(self, **kw: Any) -> list[ModelListing]:
            return [ModelListing("../../etc", {"tags": ["task2vec"]}, "0" * 40)]

    experts, skipped = list_experts(Lying(local_hub.root))
    assert experts == [] and "invalid repo id" in skipped[0][1]


def test_a_repo_whose_card_cannot_be_read_is_named_when_a_listing_filters_by_tag(tmp_path) -> None:
    """Like the Hub, a broken card has no tags, so a tag-filtered listing leaves the repo out; unlike
    the Hub's silence, the listing says which repo vanished and why."""
    import warnings

    from t2v_hub.hub import LocalHub

    hub = LocalHub(tmp_path / "hub")
    for name, card in (("org/ok", "---\ntags:\n- task2vec\n---\n"), ("org/yaml", "---\ntags: [task2vec\n---\n"),
                       ("org/bytes", None)):
        hub.create_repo(name)
        path = hub.root / name / "README.md"
        path.write_text(card) if card is not None else path.write_bytes(b"\xff\xfe\x00garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        listed = [m.repo_id for m in hub.list_models(filter=["task2vec"])]
        unfiltered = [m.repo_id for m in hub.list_models()]
    assert listed == ["org/ok"] and sorted(unfiltered) == ["org/bytes", "org/ok", "org/yaml"]
    said = [str(w.message) for w in caught]
    assert sum("org/yaml left out of the listing: its model card cannot be read" in m for m in said) == 1
    assert sum("org/bytes left out of the listing" in m and "not UTF-8" in m for m in said) == 1
