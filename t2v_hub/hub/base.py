"""The backend interface every hub implements, and the validation they share.

Two backends exist: :class:`~t2v_hub.hub.local.LocalHub` (a folder of model repos)
and :class:`~t2v_hub.hub.hf.HfHub` (the Hugging Face Hub or anything speaking its
HTTP API). ``push_embedding`` / ``list_experts`` only use the methods below, so a
third backend needs nothing else.

Repo ids and paths are validated here, once, for both backends: a repo id comes
from the command line or from a listing a stranger controls, and the local
backend turns it into a filesystem path.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import HubError

# Hugging Face naming rules (the server enforces the same): a name or namespace/name,
# each part starting with a letter or digit; at most 96 characters in all.
REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
REPO_ID_MAX = 96
# Files we write or read inside a repo: relative POSIX paths of plain names.
PATH_PART_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9._+=-]*$")  # hidden names (.eval_results) are Hub files too
PATH_MAX = 255

# Size limits: an embedding is a few hundred KB at most, a card a few KB. Far larger
# files named like ours are hostile or broken, and reading them would waste memory.
MAX_EMBEDDING_BYTES = 64 * 1024 * 1024
MAX_CARD_BYTES = 16 * 1024 * 1024


class CommitUncertainError(HubError):
    """A commit request failed in transit: it may or may not have been applied.

    Raised by backends instead of retrying themselves, because only the caller knows
    how to tell whether its change landed (see ``push_embedding``).
    """


class HubFileNotFoundError(HubError):
    """A file is not in the repository at the requested revision."""


class RevisionChangedError(HubError):
    """The requested revision is no longer available (the repository moved on)."""


@dataclass(frozen=True)
class CommitResult:
    """What a backend reports after a commit."""

    commit_id: str
    commit_url: str
    pr_url: str | None = None


class ModelListing(NamedTuple):
    """One row of a model listing: repo id, parsed card metadata (or None), head revision.

    ``files``: every file path in the repo at ``revision`` where the listing carries
    them (the Hub's full listing does), else None.
    """

    repo_id: str
    card_data: dict[str, Any] | None
    revision: str | None
    files: tuple[str, ...] | None = None


class CardState(NamedTuple):
    """A repository's README text (None when it has none) at ``revision``; unpacks as ``text, revision``."""

    text: str | None
    revision: str


class Hub(ABC):
    """A place holding model repositories: read cards, commit files, list models."""

    #: Short name used in messages ("local hub /path", "hub https://...").
    description: str = "hub"

    @abstractmethod
    def create_repo(self, repo_id: str, *, exist_ok: bool = True) -> str:
        """Create a model repo; return its URL."""

    @abstractmethod
    def repo_exists(self, repo_id: str) -> bool:
        """Whether the repo exists (and is visible to us)."""

    @abstractmethod
    def read_card(self, repo_id: str) -> CardState:
        """The README and the head revision it was read at. RepoNotFoundError if absent."""

    @abstractmethod
    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        message: str,
        *,
        parent_commit: str | None,
        create_pr: bool = False,
    ) -> CommitResult:
        """Write all ``files`` in one commit on top of ``parent_commit`` (None: no check).

        Raises ConcurrentUpdateError when the head is no longer ``parent_commit``,
        CommitUncertainError when the outcome is unknown (connection lost).
        """

    @abstractmethod
    def download(
        self, repo_id: str, path: str, revision: str | None = None, *, max_bytes: int = MAX_EMBEDDING_BYTES
    ) -> bytes:
        """One file's bytes at ``revision`` (head when None). HubFileNotFoundError if absent."""

    @abstractmethod
    def list_models(
        self, *, filter: Iterable[str] = (), author: str | None = None, search: str | None = None
    ) -> list[ModelListing]:
        """Every model whose tags include all of ``filter``, in one listing."""

    @abstractmethod
    def repo_url(self, repo_id: str) -> str:
        """Where a person can see the repo (its card)."""


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it follows the Hub naming rules, else raise HubError.

    Besides the regex, ``..`` anywhere is refused: ``a/..`` matches the character
    classes but would escape the local hub's root; so is ``--``, which the Hub reserves.
    """
    if not isinstance(repo_id, str) or not repo_id:
        raise HubError("empty repo id; pass repo_id=namespace/name")
    if len(repo_id) > REPO_ID_MAX:
        raise HubError(f"repo id {repo_id[:40]!r}... is longer than {REPO_ID_MAX} characters")
    if not REPO_ID_RE.match(repo_id) or ".." in repo_id or "--" in repo_id or repo_id.endswith((".", "-")):
        raise HubError(
            f"invalid repo id {repo_id!r}: use namespace/name with letters, digits, '.', '_' or '-' "
            "(no '..' or '--', no leading '/' or '.')"
        )
    return repo_id


def validate_repo_path(path: str) -> str:
    """Return a repo-relative path if every part is a plain name, else raise HubError."""
    if not isinstance(path, str) or not path or len(path) > PATH_MAX or "\\" in path:
        raise HubError(f"invalid path in repo {path!r}")
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or not PATH_PART_RE.match(part):
            raise HubError(f"invalid path in repo {path!r}: part {part!r} is not a plain file name")
    if parts[0] in (".git", ".t2v"):
        raise HubError(f"invalid path in repo {path!r}: {parts[0]} is reserved")
    return path


def card_tags(card_data: Mapping[str, Any] | None) -> list[str]:
    """The ``tags`` of card metadata as a list of strings (a single string counts as one tag)."""
    tags = (card_data or {}).get("tags")
    if isinstance(tags, str):
        return [tags]
    if isinstance(tags, list):
        return [t for t in tags if isinstance(t, str)]
    return []
