"""A hub in a folder: ``<root>/<namespace>/<name>/README.md``, ``task2vec/...``.

Useful offline, in CI, and as the storage behind the test server. The working tree
*is* the repository: files can be added or edited by hand and every reader sees
them. Bookkeeping lives in ``<repo>/.t2v/``:

- ``lock``: a file lock serialising readers and writers of the repo (``filelock``),
  so a reader never sees half of a two-file commit;
- ``journal.json`` + ``staging/``: a commit first writes every new file to
  ``staging/``, then the journal listing the renames (atomically), then renames the
  files into place. A crash between two renames is finished ("rolled forward") by
  the next access, so a commit is all or nothing;
- ``log.jsonl``: one line per commit (id, parent, message, files), for people;
- ``prs/<n>/``: changes proposed with ``create_pr`` (not applied to the tree).

The revision of a repo is a hash of its content (every file's path and sha256;
files over 16 MiB by size, mtime and inode, to avoid rereading weights). Two
readers that see the same revision saw the same files, so ``parent_commit`` checks
cannot lose an update, and hand edits change the revision like commits do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from filelock import FileLock, Timeout

from ..embedding import atomic_write_bytes
from ..errors import CardError, ConcurrentUpdateError, HubError, OutputError, RepoNotFoundError
from .base import (
    MAX_EMBEDDING_BYTES,
    CardState,
    CommitResult,
    CommitUncertainError,
    Hub,
    HubFileNotFoundError,
    ModelListing,
    RevisionChangedError,
    card_tags,
    validate_repo_id,
    validate_repo_path,
)
from .localfs import (  # noqa: E402
    META_DIR,
    _card_metadata,
    _check_target,
    _files,
    _fsync_dir,
    _read_file,
    _read_readme,
    _same_commit,
    content_revision,
    read_journal,
    scan,
)


def _drop_if_only_lock(meta: Path) -> None:
    """Remove a metadata folder this access created, when nothing but its lock file is in it."""
    try:
        if {p.name for p in meta.iterdir()} <= {"lock"}:
            (meta / "lock").unlink(missing_ok=True)
            meta.rmdir()
    except OSError:
        pass  # another process is using it now: leave it


class LocalHub(Hub):
    """Model repos stored as folders under ``root``."""

    def __init__(self, root: str | os.PathLike[str], *, lock_timeout: float = 60.0) -> None:
        self.root = Path(root).expanduser().resolve()
        self.lock_timeout = lock_timeout
        self.description = f"local hub {self.root}"

    def __repr__(self) -> str:
        return f"LocalHub({str(self.root)!r})"

    # -- paths and locking ------------------------------------------------------------
    def _dir(self, repo_id: str) -> Path:
        d = self.root / validate_repo_id(repo_id)
        # A symlinked namespace folder could point anywhere: stay under the root.
        if d.exists() and not d.resolve().is_relative_to(self.root):
            raise HubError(f"{repo_id!r} resolves outside the local hub {self.root}; refusing to use it")
        return d

    def _is_repo(self, d: Path) -> bool:
        if not d.is_dir() or d.is_symlink():
            return False
        if d.parent != self.root:
            # <namespace>/<name> is a repo, even empty (mkdir -p is enough), unless the
            # "namespace" is itself a repo and this is just one of its folders.
            return not self._is_repo(d.parent)
        if (d / META_DIR).is_dir() or (d / "README.md").is_file():
            return True
        # A top-level folder is a namespace unless it holds files (a repo made by hand).
        return any(c.is_file() for c in d.iterdir())

    @contextmanager
    def _locked(self, d: Path, *, write: bool = False) -> Iterator[None]:
        """The repo's lock (and the replay of a checked, unfinished commit) around an access.

        Reads of a repo that has no metadata folder take no lock and create nothing: there
        is no journal to finish, and a concurrent first commit is caught by the revision
        checks. A write that fails before writing anything leaves no folder behind.
        """
        meta = d / META_DIR
        if meta.is_symlink() or (meta.exists() and not meta.is_dir()):
            raise HubError(f"{meta} is a symbolic link or not a folder; refusing to use it (remove it: "
                           "t2v-hub keeps its lock and journal there)")
        if not write and not meta.exists():
            yield
            return
        created = not meta.exists()
        try:
            meta.mkdir(exist_ok=True)
        except OSError:
            # Read-only hub: nobody can be writing through us, read without the lock.
            yield
            return
        ok = False
        try:
            with FileLock(str(meta / "lock"), timeout=self.lock_timeout):
                self._recover(d)
                yield
                ok = True
        except Timeout as exc:
            raise HubError(
                f"{d} is locked by another process for over {self.lock_timeout:.0f}s; "
                f"if none is running, delete {meta / 'lock'}"
            ) from exc
        finally:
            if created and not ok:
                _drop_if_only_lock(meta)

    def _require(self, repo_id: str) -> Path:
        d = self._dir(repo_id)
        if not self._is_repo(d):
            raise RepoNotFoundError(
                f"repository {repo_id!r} not found in {self.description}; create it first "
                f"(t2v_hub.hub.LocalHub({str(self.root)!r}).create_repo({repo_id!r}))"
            )
        return d

    # -- Hub interface ----------------------------------------------------------------
    def repo_url(self, repo_id: str) -> str:
        return (self._dir(repo_id) / "README.md").as_uri()

    def repo_exists(self, repo_id: str) -> bool:
        return self._is_repo(self._dir(repo_id))

    def create_repo(self, repo_id: str, *, exist_ok: bool = True) -> str:
        d = self._dir(repo_id)
        if self._is_repo(d):
            if not exist_ok:
                raise HubError(f"repository {repo_id!r} already exists in {self.description}")
            return self.repo_url(repo_id)
        if "/" in repo_id and self._is_repo(d.parent):
            raise HubError(f"cannot create {repo_id!r}: {d.parent.name!r} is a repository, not a namespace")
        if d.exists() and any(d.iterdir()):
            raise HubError(f"cannot create {repo_id!r}: {d} is a namespace folder holding other repositories")
        (d / META_DIR).mkdir(parents=True, exist_ok=True)
        return self.repo_url(repo_id)

    def read_card(self, repo_id: str) -> CardState:
        d = self._require(repo_id)
        with self._locked(d):
            return CardState(_read_readme(d), content_revision(d))

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes],
        message: str,
        *,
        parent_commit: str | None,
        create_pr: bool = False,
        delete: Iterable[str] = (),
    ) -> CommitResult:
        """See :meth:`Hub.commit`; ``parent_commit=None`` skips the check, ``delete`` removes files."""
        d = self._require(repo_id)
        paths = {validate_repo_path(p): bytes(b) for p, b in files.items()}
        removed = sorted({validate_repo_path(p) for p in delete} - set(paths))
        if not paths and not removed:
            raise HubError("nothing to commit")
        with self._locked(d, write=True):
            head = content_revision(d)
            if parent_commit is not None and not _same_commit(head, parent_commit):
                raise ConcurrentUpdateError(
                    f"{repo_id} changed since it was read (head is now {head[:10]}, expected {parent_commit[:10]}); "
                    "nothing was written: run the command again to apply your change on top"
                )
            if create_pr:
                return self._open_pr(d, repo_id, paths, message, head)
            for p in [*paths, *removed]:
                _check_target(d, p)
            for p in removed:
                if not (d / p).is_file():
                    raise HubFileNotFoundError(f"cannot delete {p!r}: not in {repo_id}")
            self._apply(d, paths, removed)
            new = content_revision(d)
            entry = {
                "commit": new,
                "parent": head,
                "message": message,
                "files": {p: hashlib.sha256(b).hexdigest() for p, b in paths.items()},
                "deleted": removed,
                "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            with open(d / META_DIR / "log.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry, sort_keys=True) + "\n")
            return CommitResult(new, f"{self.repo_url(repo_id)}#{new}")

    def repo_files(self, repo_id: str) -> tuple[str, list[str]]:
        """The head revision and every file path in the repo, read consistently."""
        d = self._require(repo_id)
        with self._locked(d):
            files = _files(d)
            return content_revision(d, files), [rel for rel, _ in files]

    def download(
        self, repo_id: str, path: str, revision: str | None = None, *, max_bytes: int = MAX_EMBEDDING_BYTES
    ) -> bytes:
        d = self._require(repo_id)
        validate_repo_path(path)
        with self._locked(d):
            if revision not in (None, "main"):
                head = content_revision(d)
                if not _same_commit(head, revision):
                    raise RevisionChangedError(
                        f"{repo_id} is now at {head[:10]}, not {str(revision)[:10]}: it changed while being read; retry"
                    )
            return _read_file(d, path, max_bytes, repo_id)

    def list_models(
        self, *, filter: Iterable[str] = (), author: str | None = None, search: str | None = None
    ) -> list[ModelListing]:
        wanted = list(filter)
        out: list[ModelListing] = []
        for repo_id, d in self._walk():
            if author and repo_id.split("/")[0] != author or search and search.lower() not in repo_id.lower():
                continue
            try:
                with self._locked(d):
                    found, odd = scan(d)  # one walk: revision, file list and skipped entries
                    rev = content_revision(d, found)
                    files = tuple(rel for rel, _ in found)
                    try:
                        meta = _card_metadata(_read_readme(d))
                    except CardError as exc:
                        meta = None  # like the Hub: a broken card has no metadata, hence no tags
                        if wanted:  # ... but say so: an expert that vanished from a listing has a reason
                            warnings.warn(f"{repo_id} left out of the listing: its model card cannot be read, so it "
                                          f"has no tags ({' '.join(str(exc).split())})", RuntimeWarning, stacklevel=2)
            except HubError as exc:
                # One unsafe repo (forged journal, symlinked metadata) must not hide the others.
                warnings.warn(f"{repo_id} left out of the listing: {exc}", RuntimeWarning, stacklevel=2)
                continue
            if odd:
                warnings.warn(f"{repo_id}: skipped {len(odd)} entry(ies) that are not regular files "
                              f"(FIFO, socket or device): {', '.join(odd[:3])}", RuntimeWarning, stacklevel=2)
            if all(t in card_tags(meta) for t in wanted):
                out.append(ModelListing(repo_id, meta, rev, files))
        return out

    def _walk(self) -> Iterator[tuple[str, Path]]:
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if first.name.startswith(".") or not first.is_dir() or first.is_symlink():
                continue
            if self._is_repo(first):
                yield first.name, first
                continue
            for second in sorted(first.iterdir()):
                if not second.name.startswith(".") and self._is_repo(second):
                    yield f"{first.name}/{second.name}", second

    # -- commits ----------------------------------------------------------------------
    def _apply(self, d: Path, files: Mapping[str, bytes], removed: Iterable[str] = ()) -> None:
        meta = d / META_DIR
        staging = meta / "staging" / uuid.uuid4().hex
        staging.mkdir(parents=True)
        moves: list[list[str | None]] = []
        try:
            for i, (p, data) in enumerate(sorted(files.items())):
                atomic_write_bytes(staging / f"{i}", data)
                moves.append([str((staging / f"{i}").relative_to(d)), p])
            moves.extend([None, p] for p in removed)  # no staged file: delete the target
            # The journal is the commit point: once it exists, the commit will complete.
            atomic_write_bytes(meta / "journal.json", json.dumps({"moves": moves}).encode())
        except (OSError, OutputError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise HubError(f"cannot write to {d} ({exc}); nothing was committed") from exc
        try:
            self._recover(d)
        except OSError as exc:
            raise CommitUncertainError(
                f"writing {d} failed halfway ({exc.strerror}); the next access to the repo completes the commit"
            ) from exc

    @staticmethod
    def _recover(d: Path) -> None:
        """Finish a commit whose journal exists (a crash or error interrupted it)."""
        meta = d / META_DIR
        journal = meta / "journal.json"
        if journal.is_symlink():
            raise HubError(f"{journal} is a symbolic link; refusing to replay it (remove it)")
        if journal.exists():
            # Every path is checked before anything moves: a journal is data anyone who can
            # write this repo folder can forge, and a read must never move files from elsewhere.
            moves = read_journal(d, journal)
            touched = set()
            for staged, target in moves:
                dst = d / target
                if staged is None:
                    dst.unlink(missing_ok=True)
                    touched.add(dst.parent)
                elif (d / staged).exists():  # already moved when absent
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(d / staged, dst)
                    touched.add(dst.parent)
            for folder in touched:
                _fsync_dir(folder)
            journal.unlink()
        staging = meta / "staging"
        if staging.is_symlink():
            raise HubError(f"{staging} is a symbolic link; refusing to clean it (remove it)")
        shutil.rmtree(staging, ignore_errors=True)

    def _open_pr(self, d: Path, repo_id: str, files: Mapping[str, bytes], message: str, head: str) -> CommitResult:
        prs = d / META_DIR / "prs"
        prs.mkdir(parents=True, exist_ok=True)
        num = 1 + max((int(p.name) for p in prs.iterdir() if p.name.isdigit()), default=0)
        tmp = prs / f".{num}.{uuid.uuid4().hex}"
        for p, data in files.items():
            (tmp / "files" / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp / "files" / p).write_bytes(data)
        h = hashlib.sha1(head.encode())
        for p, data in sorted(files.items()):
            h.update(f"{p}\0{hashlib.sha256(data).hexdigest()}\n".encode())
        meta = {"num": num, "parent": head, "message": message, "files": sorted(files), "commit": h.hexdigest()}
        (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True), encoding="utf-8")
        os.replace(tmp, prs / str(num))  # the PR appears whole or not at all
        url = (prs / str(num)).as_uri()
        return CommitResult(h.hexdigest(), url, pr_url=url)


