"""Attach embeddings to model repos and find the experts that carry one.

Storage layout in a model repo (see ``cards/README.md``):

- ``task2vec/<probe-slug>.safetensors`` for the default method (montecarlo),
  ``task2vec/<probe-slug>.<method>.safetensors`` for the others. The slug is the
  probe name with ``:`` and ``/`` turned into ``--`` and anything else outside
  ``[A-Za-z0-9._-]`` into ``_`` (``hf-hub:org/x`` -> ``hf-hub--org--x``). Should two
  probes map to the same slug, the later one gets ``-<8 hex of its name's sha256>``.
- README.md front matter: the ``task2vec`` tag, and under the ``task2vec`` key a
  list of entries (probe, file, sha256, dim, method, dataset, dataset_revision,
  num_samples, norm, layout_hash, weights_sha256 and optionally nearest) that
  point to those files. The card is the index; the files hold the vectors.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..constants import DEFAULT_FISHER_METHOD, EMBEDDING_DIR, TASK2VEC_TAG
from ..embedding import Task2VecEmbedding
from ..errors import (
    CardError,
    ConcurrentUpdateError,
    EmbeddingError,
    HubError,
    IncompatibleEmbeddingError,
    IntegrityError,
)
from .base import (
    MAX_EMBEDDING_BYTES,
    CardState,
    CommitUncertainError,
    Hub,
    HubFileNotFoundError,
    validate_repo_id,
)
from .card import entry_problem, merge_entries, parse_card, read_entries, update_card


@dataclass(frozen=True, eq=False)
class Expert:
    """A model repo carrying a verified TASK2VEC embedding of its training task."""

    repo_id: str
    embedding: Task2VecEmbedding
    entry: dict[str, Any]
    task: str
    url: str
    revision: str | None = None


@dataclass
class PushResult:
    """What ``push_embedding`` did (or, with ``dry_run``, would do)."""

    repo_id: str
    path: str
    sha256: str
    entry: dict[str, Any]
    changed: bool
    dry_run: bool
    parent: str
    commit_id: str | None = None
    commit_url: str | None = None
    pr_url: str | None = None
    files: dict[str, int] = field(default_factory=dict)
    card_before: str | None = None
    card_after: str = ""
    note: str = ""

    def card_diff(self) -> str:
        """Unified diff of README.md (what the commit changes in the card)."""
        before = (self.card_before or "").splitlines(keepends=True)
        after = self.card_after.splitlines(keepends=True)
        return "".join(difflib.unified_diff(before, after, "a/README.md", "b/README.md"))


# -- hub selection ----------------------------------------------------------------------


def get_hub(spec: str | None = None, *, endpoint: str | None = None, token: str | None = None) -> Hub:
    """``"hf"`` (default): the Hugging Face Hub (``endpoint`` or ``HF_ENDPOINT``);
    an ``http(s)://`` URL: a Hub-compatible server there; anything else: a local
    folder (use ``./hf`` for a folder named hf)."""
    from .hf import HfHub
    from .local import LocalHub

    spec = spec or "hf"
    if spec == "hf":
        return HfHub(endpoint=endpoint, token=token)
    if spec.startswith(("http://", "https://")):
        if endpoint and endpoint.rstrip("/") != spec.rstrip("/"):
            raise HubError(f"hub={spec} and endpoint={endpoint} disagree; pass only one")
        return HfHub(endpoint=spec, token=token)
    if endpoint:
        raise HubError("endpoint= only applies to hub=hf or an http(s):// URL, not to a local folder")
    path = Path(spec[len("file://") :] if spec.startswith("file://") else spec).expanduser()
    if not path.is_dir():
        raise HubError(f"local hub folder {str(path)!r} does not exist; create it, or pass hub=hf")
    return LocalHub(path)


# -- file naming ------------------------------------------------------------------------


def probe_slug(probe: str) -> str:
    """A probe name made safe as one file name (see the module docstring)."""
    s = re.sub(r"[^A-Za-z0-9._-]", "_", probe.replace(":", "--").replace("/", "--"))
    s = re.sub(r"^[.-]+", "_", s) or "_"  # no hidden files, no "..", no leading dash
    if len(s) > 120:
        s = f"{s[:100]}-{hashlib.sha256(probe.encode()).hexdigest()[:12]}"
    return s


def embedding_path(probe: str, method: str) -> str:
    """Repo path of the embedding file for ``probe`` and ``method``."""
    suffix = "" if method in ("", DEFAULT_FISHER_METHOD) else "." + probe_slug(method)
    return f"{EMBEDDING_DIR}/{probe_slug(probe)}{suffix}.safetensors"


def _choose_path(entries: list[dict[str, Any]], probe: str, method: str) -> str:
    path = embedding_path(probe, method)
    for e in entries:
        if e.get("file") == path and (e.get("probe"), e.get("method") or DEFAULT_FISHER_METHOD) != (probe, method):
            # Another probe/method already owns this name: disambiguate by the probe's hash.
            tag = hashlib.sha256(f"{probe}\0{method}".encode()).hexdigest()[:8]
            return path[: -len(".safetensors")] + f"-{tag}.safetensors"
    return path


def make_entry(
    embedding: Task2VecEmbedding, path: str, sha256: str, nearest: Sequence[tuple[str, float]] | None = None
) -> dict[str, Any]:
    """The card entry pointing at an embedding file (no vector: the file has it)."""
    m = embedding.metadata

    def as_int(v: str | None) -> int | None:
        try:
            return int(v) if v not in (None, "") else None
        except ValueError:
            return None

    entry: dict[str, Any] = {
        "probe": embedding.probe,
        "file": path,
        "sha256": sha256,
        "dim": embedding.dim,
        "method": embedding.method or DEFAULT_FISHER_METHOD,
        "dataset": m.get("dataset_id") or None,
        "dataset_revision": m.get("dataset_revision") or None,
        "num_samples": as_int(m.get("num_samples")),
        "norm": float(f"{embedding.norm:.6g}"),
        "layout_hash": m.get("layout_hash") or None,
        "weights_sha256": m.get("weights_sha256") or None,
    }
    if nearest:
        entry["nearest"] = [{"task": str(t), "distance": float(f"{d:.6g}")} for t, d in list(nearest)[:10]]
    return entry


def embedding_bytes(embedding: Task2VecEmbedding) -> bytes:
    """The embedding as a safetensors file whose bytes depend only on its content.

    ``safetensors`` writes ``__metadata__`` in hash-map order, which changes from
    call to call, so the same embedding would get a new sha256 each time and an
    unchanged re-attach would look like a change. Here the header is JSON with
    sorted keys, padded with spaces to 8 bytes as the format requires.
    """
    return embedding.to_bytes()


# -- attach ------------------------------------------------------------------------------


def push_embedding(
    hub: Hub,
    repo_id: str,
    embedding: Task2VecEmbedding,
    *,
    create_pr: bool = False,
    dry_run: bool = False,
    nearest: Sequence[tuple[str, float]] | None = None,
    retries: int = 2,
    backoff: float = 1.0,
) -> PushResult:
    """Upload ``embedding`` and its card entry to ``repo_id`` in one commit.

    Nothing is committed when the repo already holds this exact embedding and card.
    If the repo changes between our read and our commit, ConcurrentUpdateError is
    raised and nothing is overwritten. If the connection drops during the commit,
    the repo is read again: a commit that landed is reported as done, an unchanged
    repo is retried (safe, because the commit names its parent), anything else is a
    concurrent update.
    """
    validate_repo_id(repo_id)
    if not embedding.probe:
        raise EmbeddingError("the embedding has no probe name in its metadata; it cannot be attached")
    data = embedding_bytes(embedding)
    sha = hashlib.sha256(data).hexdigest()
    method = embedding.method or DEFAULT_FISHER_METHOD

    state = hub.read_card(repo_id)
    entries = read_entries(parse_card(state.text).metadata) if state.text else []
    path = _choose_path(entries, embedding.probe, method)
    entry = make_entry(embedding, path, sha, nearest)
    new_card = update_card(state.text, merge_entries(entries, entry), repo_id)
    files = {path: data, "README.md": new_card.encode("utf-8")}
    result = PushResult(
        repo_id=repo_id,
        path=path,
        sha256=sha,
        entry=entry,
        changed=True,
        dry_run=dry_run,
        parent=state.revision,
        files={p: len(b) for p, b in files.items()},
        card_before=state.text,
        card_after=new_card,
    )
    if new_card == state.text and _remote_sha(hub, repo_id, path, state.revision) == sha:
        result.changed, result.commit_id, result.commit_url = False, state.revision, hub.repo_url(repo_id)
        result.note = "this embedding is already attached; nothing to do"
        return result
    if dry_run:
        return result

    message = f"Attach TASK2VEC embedding ({embedding.probe}, {method})"
    uncertain: CommitUncertainError | None = None  # the last attempt whose outcome is unknown
    for attempt in range(retries + 1):
        try:
            done = hub.commit(repo_id, files, message, parent_commit=state.revision, create_pr=create_pr)
        except ConcurrentUpdateError:
            # After a dropped attempt, "the head moved" may mean that attempt landed late.
            if uncertain is not None and _landed(hub, repo_id, new_card, path, sha, result):
                return result
            raise
        except CommitUncertainError as exc:
            uncertain = exc
            if create_pr:
                raise HubError(f"{exc}. Check the repository's pull requests before retrying: a retry could open a duplicate") from exc
            try:
                now = hub.read_card(repo_id)
            except HubError as check:
                raise HubError(
                    f"{exc}; checking the repository afterwards failed too ({check}). "
                    f"Look at {hub.repo_url(repo_id)} before retrying"
                ) from exc
            if now.revision == state.revision:
                if attempt < retries:
                    time.sleep(backoff * 2**attempt)
                    continue  # unchanged: retrying with the same parent cannot apply twice
                raise HubError(f"{exc}. The repository is unchanged (checked); try again later") from exc
            if _landed(hub, repo_id, new_card, path, sha, result, now):
                return result
            raise ConcurrentUpdateError(
                f"{repo_id} changed while committing and our change is not in it; nothing was overwritten, run again"
            ) from exc
        result.commit_id, result.commit_url, result.pr_url = done.commit_id, done.commit_url, done.pr_url
        return result
    raise AssertionError("unreachable")


def _landed(
    hub: Hub, repo_id: str, card: str, path: str, sha: str, result: PushResult, now: CardState | None = None
) -> bool:
    """Whether the repo head holds exactly our card and file (a commit we could not confirm)."""
    now = now or hub.read_card(repo_id)
    if now.text != card or _remote_sha(hub, repo_id, path, now.revision) != sha:
        return False
    result.commit_id, result.commit_url = now.revision, hub.repo_url(repo_id)
    result.note = "the connection dropped but the commit landed (checked)"
    return True


def _remote_sha(hub: Hub, repo_id: str, path: str, revision: str) -> str | None:
    try:
        return hashlib.sha256(hub.download(repo_id, path, revision, max_bytes=MAX_EMBEDDING_BYTES)).hexdigest()
    except HubFileNotFoundError:
        return None


# -- read back ---------------------------------------------------------------------------


def verify_embedding(repo_id: str, entry: dict[str, Any], data: bytes) -> Task2VecEmbedding:
    """Check a downloaded file against its card entry and parse it (never unpickles)."""
    got = hashlib.sha256(data).hexdigest()
    if got != entry["sha256"]:
        raise IntegrityError(
            f"{repo_id}/{entry['file']}: sha256 {got[:12]}... does not match the card's {entry['sha256'][:12]}...; "
            "the file or the card was changed without the other"
        )
    emb = Task2VecEmbedding.from_bytes(data, source=f"{repo_id}/{entry['file']}")
    for key, value in (("probe", emb.probe), ("method", emb.method or DEFAULT_FISHER_METHOD), ("dim", emb.dim)):
        if entry.get(key) not in (None, value):
            raise IntegrityError(f"{repo_id}/{entry['file']}: the card says {key}={entry[key]!r}, the file {value!r}")
    return emb


def _select(entries: list[dict[str, Any]], probe: str | None, method: str | None) -> list[dict[str, Any]]:
    return [
        e
        for e in entries
        if (probe is None or e.get("probe") == probe)
        and (method is None or (e.get("method") or DEFAULT_FISHER_METHOD) == method)
    ]


def _read_entries_from(state: CardState, repo_id: str) -> list[dict[str, Any]]:
    if not state.text:
        raise HubError(f"{repo_id} has no README.md, hence no TASK2VEC embedding; attach one with `t2v-hub attach`")
    return read_entries(parse_card(state.text).metadata)


def load_embedding(
    hub: Hub, repo_id: str, probe: str | None = None, *, method: str | None = None
) -> Task2VecEmbedding:
    """The embedding attached to ``repo_id`` for ``probe`` (and ``method``), verified against the card."""
    state = hub.read_card(repo_id)
    entries = _read_entries_from(state, repo_id)
    chosen = _select(entries, probe, method)
    if len(chosen) > 1 and method is None:
        chosen = _select(chosen, None, DEFAULT_FISHER_METHOD) or chosen
    if not chosen:
        have = ", ".join(f"{e.get('probe')} ({e.get('method')})" for e in entries) or "none"
        raise HubError(f"{repo_id} has no TASK2VEC embedding for probe {probe!r}; it has: {have}")
    if len(chosen) > 1:
        have = ", ".join(f"{e.get('probe')} ({e.get('method')})" for e in chosen)
        raise HubError(f"{repo_id} has several embeddings ({have}); pass probe= and method=")
    entry = chosen[0]
    data = hub.download(repo_id, entry["file"], state.revision, max_bytes=MAX_EMBEDDING_BYTES)
    return verify_embedding(repo_id, entry, data)


def list_experts(
    hub: Hub,
    *,
    filter: Iterable[str] | None = None,
    probe: str | None = None,
    method: str | None = None,
    compatible_with: Task2VecEmbedding | None = None,
) -> tuple[list[Expert], list[tuple[str, str]]]:
    """Every model tagged ``task2vec`` (and all of ``filter``) with a usable embedding.

    One listing gives every card's metadata; each embedding file is then fetched
    (through the cache) and checked against the card. Repos whose card or file is
    missing, malformed, mismatched or incompatible (other probe/method, or not
    comparable with ``compatible_with``) are returned in ``skipped`` with a reason.
    """
    tags = list(dict.fromkeys([TASK2VEC_TAG, *(filter or [])]))
    experts: list[Expert] = []
    skipped: list[tuple[str, str]] = []
    for listing in hub.list_models(filter=tags):
        repo_id = listing.repo_id
        try:
            validate_repo_id(repo_id)  # a hostile server could list "../x"
        except HubError as exc:
            skipped.append((repo_id, str(exc)))
            continue
        if listing.card_data is None:
            skipped.append((repo_id, "card metadata is missing or unreadable"))
            continue
        try:
            entries = read_entries(listing.card_data)
        except CardError as exc:
            skipped.append((repo_id, str(exc)))
            continue
        chosen = _select(entries, probe, method)
        if not chosen:
            have = ", ".join(f"{e.get('probe')} ({e.get('method')})" for e in entries) or "no entries"
            want = " ".join(x for x in (probe, method) if x) or "any probe"
            skipped.append((repo_id, f"no embedding for {want} (has: {have})"))
            continue
        for entry in chosen:
            label = f"{entry['probe']} ({entry.get('method') or DEFAULT_FISHER_METHOD})"
            try:
                data = hub.download(repo_id, entry["file"], listing.revision, max_bytes=MAX_EMBEDDING_BYTES)
                emb = verify_embedding(repo_id, entry, data)
                if compatible_with is not None:
                    compatible_with.check_compatible(emb)
            except HubFileNotFoundError:
                skipped.append((repo_id, f"{label}: file {entry['file']} is missing"))
                continue
            except (HubError, EmbeddingError) as exc:  # integrity, parse, incompatible, download failures
                kind = "incompatible" if isinstance(exc, IncompatibleEmbeddingError) else "unusable"
                skipped.append((repo_id, f"{label}: {kind}: {exc}"))
                continue
            task = str(entry.get("dataset") or emb.metadata.get("dataset_id") or "")
            experts.append(Expert(repo_id, emb, dict(entry), task, hub.repo_url(repo_id), listing.revision))
    return experts, skipped


__all__ = [
    "Expert",
    "PushResult",
    "embedding_bytes",
    "embedding_path",
    "entry_problem",
    "get_hub",
    "list_experts",
    "load_embedding",
    "make_entry",
    "probe_slug",
    "push_embedding",
    "verify_embedding",
]
