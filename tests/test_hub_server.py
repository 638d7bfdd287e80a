"""HfHub against the test hub server: every client call t2v-hub makes, faults, tokens."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hub_server import TOKEN, HubServer

from t2v_hub.errors import CardError, ConcurrentUpdateError, HubError, RepoNotFoundError
from t2v_hub.hub import list_experts, load_embedding, push_embedding
from t2v_hub.hub.base import HubFileNotFoundError
from t2v_hub.hub.card import parse_card
from t2v_hub.hub.hf import HfHub

pytestmark = pytest.mark.hub
REPO = "org/model-a"


def server_commits(server: HubServer, repo: str = REPO) -> list[dict[str, Any]]:
    log = server.hub.root / repo / ".t2v" / "log.jsonl"
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def head(server: HubServer, repo: str = REPO) -> str:
    return server.hub.read_card(repo).revision


# -- contract: one test per client call ---------------------------------------------------


def test_create_repo_and_whoami(hub_server: HubServer, hf_hub: HfHub) -> None:
    url = hf_hub.create_repo(REPO)
    assert url == f"{hub_server.url}/{REPO}" and hub_server.hub.repo_exists(REPO)
    assert hf_hub.create_repo(REPO) == url  # exist_ok: 409 is fine
    with pytest.raises(HubError, match="409"):
        hf_hub.create_repo(REPO, exist_ok=False)
    assert hf_hub.whoami() == "t2v-tester"
    assert hub_server.calls("POST", "/api/repos/create")[0].auth == f"Bearer {TOKEN}"


def test_model_info_and_readme(hub_server: HubServer, hf_hub: HfHub) -> None:
    with pytest.raises(RepoNotFoundError):
        hf_hub.read_card("org/absent")
    assert not hf_hub.repo_exists("org/absent")
    hf_hub.create_repo(REPO)
    state = hf_hub.read_card(REPO)
    assert state.text is None and state.revision == head(hub_server)
    assert hub_server.calls("HEAD", r".*/resolve/.*") == []  # no README in siblings: no download attempt
    (hub_server.hub.root / REPO / "README.md").write_text("---\nlicense: mit\n---\nhi\n")
    state = hf_hub.read_card(REPO)
    assert state.text == "---\nlicense: mit\n---\nhi\n" and state.revision == head(hub_server)


def test_commit_is_one_request_with_parent(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    res = push_embedding(hf_hub, REPO, make_embedding(0))
    assert len(hub_server.calls("POST", rf"/api/models/{REPO}/commit/main")) == 1
    (c,) = server_commits(hub_server)
    assert set(c["files"]) == {"README.md", res.path}  # file + card, one commit
    assert res.commit_id == head(hub_server) and res.commit_url == f"{hub_server.url}/{REPO}/commit/{res.commit_id}"
    assert parse_card(hub_server.hub.read_card(REPO).text or "").metadata["task2vec"] == [res.entry]
    # Stale parent: the server answers 412 as the Hub does; nothing is overwritten.
    with pytest.raises(ConcurrentUpdateError):
        hf_hub.commit(REPO, {"README.md": b"overwrite\n"}, "m", parent_commit=c["parent"])
    assert hub_server.hub.read_card(REPO).text != "overwrite\n"


def test_server_side_yaml_validation(hub_server: HubServer, hf_hub: HfHub) -> None:
    hf_hub.create_repo(REPO)
    with pytest.raises(CardError, match="rejected the card metadata"):
        hf_hub.commit(REPO, {"README.md": b"---\na: [\n---\n"}, "bad card", parent_commit=head(hub_server))
    assert hub_server.calls("POST", "/api/validate-yaml") and server_commits(hub_server) == []


def test_create_pr(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    before = head(hub_server)
    res = push_embedding(hf_hub, REPO, make_embedding(0), create_pr=True)
    assert res.pr_url == f"{hub_server.url}/{REPO}/discussions/1" and head(hub_server) == before
    assert hub_server.calls("POST", rf"/api/models/{REPO}/commit/main")[0].query["create_pr"] == ["1"]


def test_listing_is_one_paginated_call_with_card_data(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    for i in range(5):
        hf_hub.create_repo(f"org{i % 2}/m{i}")
        push_embedding(hf_hub, f"org{i % 2}/m{i}", make_embedding(i, probe="p" if i < 4 else "q"))
    hf_hub.create_repo("org0/untagged")
    (hub_server.hub.root / "org0/untagged/README.md").write_text("---\ntags: [vision]\n---\n")
    hub_server.requests.clear()
    experts, skipped = list_experts(hf_hub, probe="p")
    assert sorted(e.repo_id for e in experts) == ["org0/m0", "org0/m2", "org1/m1", "org1/m3"]
    assert [r for r, _ in skipped] == ["org0/m4"]
    pages = hub_server.calls("GET", "/api/models")
    assert len(pages) == 3 and pages[0].query["filter"] == ["task2vec"] and pages[0].query["cardData"] == ["true"]
    assert hub_server.calls("GET", r"/api/models/.+") == []  # no request per repo
    # author/search go to the server; a second run is served by the download cache.
    assert [m.repo_id for m in hf_hub.list_models(filter=["task2vec"], author="org1")] == ["org1/m1", "org1/m3"]
    assert [m.repo_id for m in hf_hub.list_models(search="M4")] == ["org0/m4"]
    hub_server.requests.clear()
    assert len(list_experts(hf_hub, probe="p")[0]) == 4
    assert hub_server.calls("GET", r".*/resolve/.*") == [] and hub_server.calls("HEAD", r".*/resolve/.*") == []


def test_download_and_verify(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    emb = make_embedding(0)
    res = push_embedding(hf_hub, REPO, emb)
    assert hf_hub.download(REPO, res.path, head(hub_server), max_bytes=10**6) == (hub_server.hub.root / REPO / res.path).read_bytes()
    assert load_embedding(hf_hub, REPO).metadata == emb.metadata
    with pytest.raises(HubFileNotFoundError):
        hf_hub.download(REPO, "task2vec/absent.safetensors", head(hub_server), max_bytes=10**6)
    with pytest.raises(HubError, match="limit"):
        hf_hub.download(REPO, "README.md", head(hub_server), max_bytes=10)
    assert not push_embedding(hf_hub, REPO, emb).changed and len(server_commits(hub_server)) == 1


# -- tokens ---------------------------------------------------------------------------------


def test_token_is_sent_but_never_shown(hub_server: HubServer, hf_isolated: Path, make_embedding) -> None:
    anonymous = HfHub(endpoint=hub_server.url, token=None, timeout=2, retries=0, cache_dir=hf_isolated)
    wrong = HfHub(endpoint=hub_server.url, token="hf_wrong_secret_value", timeout=2, retries=0, cache_dir=hf_isolated)
    HfHub(endpoint=hub_server.url, token=TOKEN, cache_dir=hf_isolated).create_repo(REPO)
    for hub in (anonymous, wrong):
        with pytest.raises(HubError) as info:
            push_embedding(hub, REPO, make_embedding(0))
        assert "token" in str(info.value) and "hf_wrong_secret_value" not in str(info.value)
        assert "secret" not in repr(hub)
    assert server_commits(hub_server) == []


# -- faults ---------------------------------------------------------------------------------


def test_500s_on_reads_are_retried_then_reported(hub_server: HubServer, hf_hub: HfHub) -> None:
    hf_hub.create_repo(REPO)
    hub_server.fail("500", path=rf"^/api/models/{REPO}$", times=2)
    assert hf_hub.read_card(REPO).revision == head(hub_server)  # 2 failures, 3rd attempt works
    hub_server.fail("500", path=rf"^/api/models/{REPO}$", times=100)
    with pytest.raises(HubError, match="after 3 attempts.*500"):
        hf_hub.read_card(REPO)
    assert len(hub_server.calls("GET", rf"/api/models/{REPO}")) == 3 + 3


def test_listing_500s_and_timeouts(hub_server: HubServer, hf_hub: HfHub, fast_hf_retries: None, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    push_embedding(hf_hub, REPO, make_embedding(0))
    hub_server.fail("500", path="^/api/models$", times=2)
    assert len(list_experts(hf_hub)[0]) == 1
    hub_server.fail("500", path="^/api/models$", times=100)
    with pytest.raises(HubError, match="listing models failed"):
        list_experts(hf_hub)
    hub_server.clear_faults()
    slow = HfHub(endpoint=hub_server.url, token=TOKEN, timeout=0.3, retries=1, backoff=0, cache_dir=hf_hub.cache_dir)
    hub_server.fail("sleep", path="^/api/models$", times=1, seconds=1.0)
    assert len(list_experts(slow)[0]) == 1  # the client gave up after 0.3 s, the retry worked
    hub_server.fail("sleep", path="^/api/models$", times=100, seconds=0.6)
    with pytest.raises(HubError, match="timed out"):
        list_experts(slow)


def test_timeout_on_model_info(hub_server: HubServer, hf_isolated: Path) -> None:
    hub = HfHub(endpoint=hub_server.url, token=TOKEN, timeout=0.3, retries=1, backoff=0, cache_dir=hf_isolated)
    hub.create_repo(REPO)
    hub_server.fail("sleep", path=rf"^/api/models/{REPO}$", times=1, seconds=1.0)
    assert hub.read_card(REPO).text is None
    hub_server.fail("sleep", path=rf"^/api/models/{REPO}$", times=2, seconds=1.0)
    with pytest.raises(HubError, match="after 2 attempts: timed out"):
        hub.read_card(REPO)


@pytest.mark.parametrize("kind", ["500", "close"])
def test_commit_failure_then_success_makes_one_commit(hub_server: HubServer, hf_hub: HfHub, make_embedding, kind: str) -> None:
    hf_hub.create_repo(REPO)
    hub_server.fail(kind, path="/commit/", times=1)
    res = push_embedding(hf_hub, REPO, make_embedding(0), backoff=0)
    assert res.changed and len(server_commits(hub_server)) == 1
    load_embedding(hf_hub, REPO)


def test_connection_closed_after_commit_applied(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    hub_server.fail("close_after", path="/commit/", times=1)
    res = push_embedding(hf_hub, REPO, make_embedding(0), backoff=0)
    assert "landed" in res.note and res.commit_id == head(hub_server)
    assert len(server_commits(hub_server)) == 1  # confirmed, not committed twice


def test_commit_timeout_applied_late_is_not_doubled(hub_server: HubServer, hf_isolated: Path, make_embedding) -> None:
    hub = HfHub(endpoint=hub_server.url, token=TOKEN, timeout=0.5, retries=2, backoff=0, cache_dir=hf_isolated)
    hub.create_repo(REPO)
    # The server applies the first attempt after the client gave up on it.
    hub_server.fail("sleep", path="/commit/", times=1, seconds=1.0)
    res = push_embedding(hub, REPO, make_embedding(0), backoff=0.6)
    assert res.commit_id == head(hub_server) and len(server_commits(hub_server)) == 1
    import time

    time.sleep(0.6)  # let the late attempt finish: it must be refused (412), not applied twice
    assert len(server_commits(hub_server)) == 1 and load_embedding(hub, REPO)


@pytest.mark.parametrize("kind", ["500", "close"])
def test_commit_always_failing_leaves_repo_unchanged(hub_server: HubServer, hf_hub: HfHub, make_embedding, kind: str) -> None:
    hf_hub.create_repo(REPO)
    (hub_server.hub.root / REPO / "README.md").write_text("---\nlicense: mit\n---\nmine\n")
    before = hub_server.hub.read_card(REPO)
    hub_server.fail(kind, path="/commit/", times=100)
    with pytest.raises(HubError, match="unchanged"):
        push_embedding(hf_hub, REPO, make_embedding(0), backoff=0)
    assert hub_server.hub.read_card(REPO) == before and server_commits(hub_server) == []
    assert len(hub_server.calls("POST", r".*/commit/main")) == 3  # bounded: 1 + 2 retries


def test_dropped_pr_commit_is_not_retried(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    hub_server.fail("close", path="/commit/", times=1)
    with pytest.raises(HubError, match="pull requests"):
        push_embedding(hf_hub, REPO, make_embedding(0), create_pr=True)
    assert len(hub_server.calls("POST", r".*/commit/main")) == 1


def test_download_500_is_retried(hub_server: HubServer, hf_hub: HfHub, fast_hf_retries: None, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    push_embedding(hf_hub, REPO, make_embedding(0))
    hub_server.fail("500", path=r"/resolve/.*\.safetensors$", method="GET", times=1)
    assert len(list_experts(hf_hub)[0]) == 1
    hub_server.fail("500", path=r"/resolve/.*\.safetensors$", times=1000)
    shutil_cache(hf_hub)
    experts, skipped = list_experts(hf_hub)
    assert experts == [] and "500" in skipped[0][1]


def shutil_cache(hub: HfHub) -> None:
    import shutil

    shutil.rmtree(hub.cache_dir or "", ignore_errors=True)


# -- hostile content served by the hub ------------------------------------------------------


def test_bad_cards_and_tampered_files_on_the_server(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo("org/bad-yaml")
    (hub_server.hub.root / "org/bad-yaml/README.md").write_text("---\ntags: [task2vec\n---\n")
    with pytest.raises(CardError):
        push_embedding(hf_hub, "org/bad-yaml", make_embedding(0))
    hf_hub.create_repo("org/python-tag")
    (hub_server.hub.root / "org/python-tag/README.md").write_text("---\nx: !!python/object/apply:os.system ['touch pwned']\n---\n")
    with pytest.raises(CardError):
        push_embedding(hf_hub, "org/python-tag", make_embedding(0))
    assert not Path("pwned").exists()
    hf_hub.create_repo("org/tampered")
    res = push_embedding(hf_hub, "org/tampered", make_embedding(0))
    (hub_server.hub.root / "org/tampered" / res.path).write_bytes(b"\x00" * 100)
    experts, skipped = list_experts(hf_hub)
    assert experts == [] and skipped[0][0] == "org/tampered" and "sha256" in skipped[0][1]


def test_ten_megabyte_readme_through_the_server(hub_server: HubServer, hf_hub: HfHub, make_embedding) -> None:
    hf_hub.create_repo(REPO)
    body = ("A long model card line with some text. " * 3 + "\n") * 90_000
    (hub_server.hub.root / REPO / "README.md").write_text("---\nlicense: mit\n---\n" + body)
    push_embedding(hf_hub, REPO, make_embedding(0))
    after = parse_card(hub_server.hub.read_card(REPO).text or "")
    assert after.body.startswith(body) and after.metadata["license"] == "mit"


def test_an_endpoint_where_nothing_listens_fails_at_once_naming_it(hf_isolated: Path) -> None:
    """A refused connection is definitive: no 25-35 s of huggingface_hub's retries and ours before it is
    reported (the message is the reachability check's, not the retry loop's "failed after N attempts")."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = HfHub(endpoint=f"http://127.0.0.1:{port}", retries=3)
    for call in (lambda: hub.list_models(), lambda: hub.read_card("org/m"), lambda: hub.download("org/m", "a.bin")):
        with pytest.raises(HubError, match=rf"cannot reach http://127.0.0.1:{port} \(ConnectionRefusedError"):
            call()

