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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import check_count, check_flag, check_real, is_finite_real
from ..constants import DEFAULT_FISHER_METHOD, EMBEDDING_DIR
from ..embedding import Task2VecEmbedding
from ..errors import (
    ConcurrentUpdateError,
    EmbeddingError,
    HubError,
    RepoNotFoundError,
)
from .base import (
    MAX_EMBEDDING_BYTES,
    CardState,
    CommitUncertainError,
    Hub,
    HubFileNotFoundError,
    validate_repo_id,
)
from .card import merge_entries, parse_card, read_entries, update_card
from .licenses import check_base_model, check_license


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

    if spec is not None and (not isinstance(spec, str) or not spec.strip()):
        raise HubError(f"hub={spec!r}: expected 'hf', an http(s):// URL or a local folder")
    spec = spec or "hf"
    if spec == "hf":
        return HfHub(endpoint=endpoint, token=token)
    if spec.startswith(("http://", "https://")):
        if endpoint and endpoint.rstrip("/") != spec.rstrip("/"):
            raise HubError(f"hub={spec} and endpoint={endpoint} disagree; pass only one")
        return HfHub(endpoint=spec, token=token)
    if endpoint:
        raise HubError("endpoint= only applies to hub=hf or an http(s):// URL, not to a local folder")
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", spec)
    if scheme and scheme.group(1).lower() != "file":
        raise HubError(f"hub {spec!r}: the {scheme.group(1)}:// scheme is not supported; pass 'hf', an http(s):// "
                       "URL or a local folder")
    path = Path(spec[len("file://") :] if spec.startswith("file://") else spec).expanduser()
    if path.is_file():
        raise HubError(f"local hub {str(path)!r} is a file, not a folder; pass the hub's folder, or 'hf' for the "
                       "Hugging Face Hub")
    if not path.is_dir():
        raise HubError(f"local hub folder {str(path)!r} does not exist; create it, or pass 'hf' for the Hugging Face "
                       "Hub")
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


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def card_fields(embedding: Task2VecEmbedding, hub: Hub, repo_id: str, *, license: str | None = None,
                base_model: str | None = None) -> dict[str, Any]:
    """The Hub's standard card fields a new card can state truthfully.

    ``datasets``: the embedded dataset when it is a Hub id (not ``local:...`` or in-memory);
    ``library_name: timm`` when the repo holds timm's ``config.json``; ``license`` and
    ``base_model`` when given.
    """
    out: dict[str, Any] = {}
    listing = getattr(hub, "repo_files", None)  # LocalHub; the HTTP hub's listing carries no files here
    try:
        files = listing(repo_id)[1] if listing is not None else []
    except (HubError, HubFileNotFoundError):
        files = []
    if "config.json" in files:
        out["library_name"] = "timm"
    if license:
        out["license"] = license
    if base_model:
        out["base_model"] = base_model
    ds = str(embedding.metadata.get("dataset_id") or "")
    if ds and not ds.startswith(("local:", "<", "zoo/")) and _HUB_ID.match(ds):
        out["datasets"] = [ds]
    return out


def _check_push_args(create_pr: Any, dry_run: Any, create_repo: Any, nearest: Any, retries: Any, backoff: Any
                     ) -> tuple[list[tuple[str, float]] | None, int, float]:
    """Before anything is read or written: ``dry_run=0`` would commit, ``dry_run="no"`` would not."""
    for name, value in (("create_pr", create_pr), ("dry_run", dry_run), ("create_repo", create_repo)):
        check_flag(name, value, error=HubError)
    pairs = None
    if nearest is not None:
        try:
            items = list(nearest)
            pairs = [(r, float(d)) for r, d in items if isinstance(r, str) and is_finite_real(float(d))]
            ok = len(pairs) == len(items)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise HubError(f"nearest={nearest!r}: expected (repo_id, distance) pairs with finite distances, or None")
    return pairs, check_count("retries", retries, 0, error=HubError), check_real("backoff", backoff, 0.0, error=HubError)


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
    create_repo: bool = False,
    license: str | None = None,
    base_model: str | None = None,
) -> PushResult:
    """Upload ``embedding`` and its card entry to ``repo_id`` in one commit.

    ``create_repo=True`` creates the repo first when it does not exist (not in a dry run).
    A repo without a README gets a card with the Hub's standard fields where known
    (:func:`card_fields`); an existing card's other fields are never touched.

    Nothing is committed when the repo already holds this exact embedding and card.
    If the repo changes between our read and our commit, ConcurrentUpdateError is
    raised and nothing is overwritten. If the connection drops during the commit,
    the repo is read again: a commit that landed is reported as done, an unchanged
    repo is retried (safe, because the commit names its parent), anything else is a
    concurrent update.
    """
    validate_repo_id(repo_id)
    nearest, retries, backoff = _check_push_args(create_pr, dry_run, create_repo, nearest, retries, backoff)
    for name, value in (("license", license), ("base_model", base_model)):
        if value is not None and not isinstance(value, str):
            raise HubError(f"{name}={value!r}: expected a str, or None")
    check_license(license)  # before anything is written: the Hub would refuse the card
    check_base_model(base_model)
    if not embedding.probe:
        raise EmbeddingError("the embedding has no probe name in its metadata; it cannot be attached")
    data = embedding_bytes(embedding)
    sha = hashlib.sha256(data).hexdigest()
    method = embedding.method or DEFAULT_FISHER_METHOD

    new_repo = not hub.repo_exists(repo_id)
    if new_repo and not create_repo:
        raise RepoNotFoundError(f"repository {repo_id!r} not found on {hub.description}; pass create_repo=True "
                                "to create it")
    if new_repo and not dry_run:
        hub.create_repo(repo_id)
    # A dry run plans against the empty repo it would create, and creates nothing.
    state = CardState(None, "") if new_repo and dry_run else hub.read_card(repo_id)
    entries = read_entries(parse_card(state.text).metadata) if state.text else []
    path = _choose_path(entries, embedding.probe, method)
    entry = make_entry(embedding, path, sha, nearest)
    # A new card states every field known; an existing one gains only those it lacks (update_card).
    fields = card_fields(embedding, hub, repo_id, license=license, base_model=base_model)
    new_card = update_card(state.text, merge_entries(entries, entry), repo_id, fields)
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
    result.note = f"{repo_id} would be created first" if new_repo and dry_run else ""
    if not (new_repo and dry_run) and new_card == state.text and _remote_sha(hub, repo_id, path, state.revision) == sha:
        result.changed, result.commit_id, result.commit_url = False, state.revision, hub.repo_url(repo_id)
        result.note = "this embedding is already attached; nothing to do"
        return result
    if dry_run:
        return result

    message = f"Attach TASK2VEC embedding ({embedding.probe}, {method})"
    return _commit(hub, repo_id, files, message, state, result, create_pr, retries, backoff)


def _commit(hub: Hub, repo_id: str, files: dict[str, bytes], message: str, state: CardState, result: PushResult,
            create_pr: bool, retries: int, backoff: float) -> PushResult:
    """One commit with a known parent; a dropped connection is resolved by reading the repo again."""
    new_card, path, sha = result.card_after, result.path, result.sha256
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


__all__ = [
    "Expert",
    "PushResult",
    "embedding_bytes",
    "embedding_path",
    "get_hub",
    "make_entry",
    "probe_slug",
    "push_embedding",
]
