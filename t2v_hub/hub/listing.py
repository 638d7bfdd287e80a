"""Read attached embeddings back: verify them against their card and list a hub's experts."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterable
from typing import Any

from ..config import check_flag, check_names
from ..constants import DEFAULT_FISHER_METHOD, TASK2VEC_TAG
from ..embedding import Task2VecEmbedding
from ..errors import (
    CardError,
    EmbeddingError,
    HubError,
    IncompatibleEmbeddingError,
    IntegrityError,
)
from .api import Expert
from .base import (
    MAX_EMBEDDING_BYTES,
    CardState,
    Hub,
    HubFileNotFoundError,
    validate_repo_id,
)
from .card import parse_card, read_entries

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


def _check_listing_args(filter: Any, probe: Any, method: Any, compatible_with: Any, progress: Any) -> list[str] | None:
    """list_experts' arguments checked before the listing, each named (not a TypeError from a join or a
    splat); one tag as a str is one tag, as huggingface_hub's ``list_models(filter=)`` takes it, not its letters."""
    if isinstance(filter, str):
        filter = [filter]
    tags = check_names("filter", filter, "tags", error=HubError) if filter is not None else None
    for name, value in (("probe", probe), ("method", method)):
        if value is not None and not isinstance(value, str):
            raise HubError(f"{name}={value!r}: expected a {'timm model' if name == 'probe' else 'Fisher method'} "
                           "name, or None for any")
    if compatible_with is not None and not isinstance(compatible_with, Task2VecEmbedding):
        raise HubError(f"compatible_with={type(compatible_with).__name__}: expected a Task2VecEmbedding, or None")
    check_flag("progress", progress, error=HubError)
    return tags


def list_experts(
    hub: Hub,
    *,
    filter: Iterable[str] | None = None,
    probe: str | None = None,
    method: str | None = None,
    compatible_with: Task2VecEmbedding | None = None,
    progress: bool = False,
) -> tuple[list[Expert], list[tuple[str, str]]]:
    """Every model tagged ``task2vec`` (and all of ``filter``) with a usable embedding.

    One listing gives every card's metadata; each embedding file is then fetched
    (through the cache) and checked against the card. Repos whose card or file is
    missing, malformed, mismatched or incompatible (other probe/method, or not
    comparable with ``compatible_with``) are returned in ``skipped`` with a reason.
    ``progress``: a bar on stderr counting the repos read (a hub's listing has no known length).
    """
    from tqdm.auto import tqdm

    filter = _check_listing_args(filter, probe, method, compatible_with, progress)
    tags = list(dict.fromkeys([TASK2VEC_TAG, *(filter or [])]))
    experts: list[Expert] = []
    skipped: list[tuple[str, str]] = []
    listings = tqdm(hub.list_models(filter=tags), desc="reading expert cards", unit="repo", disable=not progress,
                    file=sys.stderr, leave=False)
    for listing in listings:
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


__all__ = ["list_experts", "load_embedding", "verify_embedding"]
