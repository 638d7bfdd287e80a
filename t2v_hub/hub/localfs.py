"""File-system helpers of :class:`~t2v_hub.hub.local.LocalHub`: content revisions, safe reads, fsync."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

from ..errors import CardError, HubError
from .base import (
    MAX_CARD_BYTES,
    HubFileNotFoundError,
)

META_DIR = ".t2v"  # per-repo metadata: lock, journal, staging
_HASH_CONTENT_LIMIT = 16 * 1024 * 1024


def content_revision(d: Path, files: list[tuple[str, Path]] | None = None) -> str:
    """Content hash of a repo folder (see the module docstring); ``files`` from :func:`scan` if at hand."""
    h = hashlib.sha1()
    for rel, p in files if files is not None else _files(d):
        if p.is_symlink():
            h.update(f"L {rel} {os.readlink(p)}\n".encode())
            continue
        st = p.stat()
        if st.st_size <= _HASH_CONTENT_LIMIT:
            digest = _sha256_file(p)
        else:
            digest = f"stat:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        h.update(f"F {rel} {digest}\n".encode())
    return h.hexdigest()


def scan(d: Path) -> tuple[list[tuple[str, Path]], list[str]]:
    """One walk of a repo: its regular files and symlinks, and the entries that are neither.

    FIFOs, sockets and devices are never opened (opening a FIFO blocks); they are returned
    by name so a listing can say it skipped them.
    """
    files, special = [], []
    for folder, dirs, names in os.walk(d):
        if Path(folder) == d:
            dirs[:] = [x for x in dirs if x != META_DIR]
        dirs.sort()
        for n in names:
            p = Path(folder) / n
            try:
                mode = os.lstat(p).st_mode
            except OSError:
                continue
            rel = p.relative_to(d).as_posix()
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                files.append((rel, p))
            else:
                special.append(rel)
    return sorted(files), sorted(special)


def _files(d: Path) -> list[tuple[str, Path]]:
    """Regular files and symlinks of a repo (never FIFOs, sockets or devices: opening one can block)."""
    return scan(d)[0]


def inside(d: Path, rel: str, what: str) -> Path:
    """``d / rel`` for a path read from the hub's own metadata, refused unless it stays inside ``d``.

    No absolute path, no ``..``, no empty or ``.`` part, no symlink on the way: the one
    check every path a journal, manifest or listing names goes through.
    """
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\0" in rel:
        raise HubError(f"{what}: path {rel!r} is not a relative path inside {d}; refusing to use it")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise HubError(f"{what}: path {rel!r} leaves {d}; refusing to use it")
    cur = d
    for part in parts:
        cur = cur / part
        if cur.is_symlink():
            raise HubError(f"{what}: {cur} is a symbolic link; refusing to follow it")
    return cur


_STAGED = re.compile(rf"^{re.escape(META_DIR)}/staging/[0-9a-f]{{32}}/[0-9]+$")


def read_journal(d: Path, journal: Path) -> list[tuple[str | None, str]]:
    """The moves of an unfinished commit, each checked: staged files under ``.t2v/staging``, targets repo paths."""
    from .base import validate_repo_path

    fix = f"nothing was replayed; inspect {journal} and delete it (the interrupted commit is then lost)"
    try:
        moves = json.loads(journal.read_bytes())["moves"]
        if not isinstance(moves, list) or not all(isinstance(m, list) and len(m) == 2 for m in moves):
            raise ValueError("moves must be [staged, target] pairs")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HubError(f"{journal} is damaged ({type(exc).__name__}); {fix}") from exc
    out: list[tuple[str | None, str]] = []
    for staged, target in moves:
        if not isinstance(target, str) or (staged is not None and not isinstance(staged, str)):
            raise HubError(f"{journal} holds a move that is not a pair of paths; {fix}")
        try:
            validate_repo_path(target)
            inside(d, target, str(journal))
            if staged is not None:
                if not _STAGED.match(staged):
                    raise HubError(f"staged file {staged!r} is not under {META_DIR}/staging")
                inside(d, staged, str(journal))
        except HubError as exc:
            raise HubError(f"{journal} names a path outside the repo or through a link ({exc}); {fix}") from exc
        out.append((staged, target))
    return out


def _sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _same_commit(head: str, wanted: str | None) -> bool:
    # The Hub accepts 7+ character prefixes of a commit id; so do we.
    return bool(wanted) and len(wanted) >= 7 and head.startswith(wanted.lower())


def _check_target(d: Path, path: str) -> None:
    """Refuse to write through symlinks or over folders: a repo must not write outside itself."""
    cur = d
    parts = path.split("/")
    for i, part in enumerate(parts):
        cur = cur / part
        if cur.is_symlink():
            raise HubError(f"cannot write {path!r}: {cur} is a symbolic link")
        last = i == len(parts) - 1
        if cur.exists() and (cur.is_dir() if last else not cur.is_dir()):
            raise HubError(f"cannot write {path!r}: {cur} is in the way")


def _read_file(d: Path, path: str, max_bytes: int, repo_id: str) -> bytes:
    p = d / path
    cur = d
    for part in path.split("/"):
        cur = cur / part
        if cur.is_symlink():
            raise HubError(f"{repo_id}/{path}: {cur} is a symbolic link; refusing to follow it")
    if not p.is_file():
        raise HubFileNotFoundError(f"{path!r} not found in {repo_id}")
    size = p.stat().st_size
    if size > max_bytes:
        raise HubError(f"{repo_id}/{path} is {size:,} bytes, over the {max_bytes:,} limit; it is not a t2v-hub file")
    return p.read_bytes()


def _read_readme(d: Path) -> str | None:
    p = d / "README.md"
    if p.is_symlink():
        raise CardError(f"{p} is a symbolic link; refusing to follow it")
    if not p.is_file():
        return None
    if p.stat().st_size > MAX_CARD_BYTES:
        raise CardError(f"{p} is over {MAX_CARD_BYTES:,} bytes; shorten the card first")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CardError(f"{p} is not UTF-8 text ({exc.reason} at byte {exc.start}); fix the card") from exc


def _card_metadata(text: str | None) -> dict | None:
    from .card import parse_card

    return parse_card(text).metadata if text else {}


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on folders; the rename is still atomic
    finally:
        os.close(fd)
