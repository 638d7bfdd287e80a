"""The cache folder (``T2V_HUB_CACHE``): where embeddings, t0 and on-disk decode buffers go, and
what happens when it cannot be used.

A cache is an optimisation, so a cache that cannot be written must not cost the user the
result: like pip with an unwritable cache, t2v-hub says so once (one warning naming the folder,
the reason and the fix) and runs uncached. The check runs *before* the work, so the warning
comes first and nothing fails at the end of a long Fisher pass.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

from . import constants as C

__all__ = ["cache_subdir", "scratch_dir"]

_warned: set[tuple[str, str]] = set()  # (folder, fallback) already warned about


def _usable(folder: Path) -> str | None:
    """None if ``folder`` exists (or could be created) and takes a new file, else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    os.close(fd)
    os.unlink(probe)
    return None


def cache_subdir(name: str, instead: str = "this run is not cached") -> Path | None:
    """``cache_dir()/name``, created if needed, or None (with one warning per folder) if unusable.

    ``instead``: what the caller does without it, for the warning.
    """
    root = Path(C.cache_dir())
    folder = root / name
    why = _usable(folder)
    if why is None:
        return folder
    if (str(root), instead) not in _warned:
        _warned.add((str(root), instead))
        fix = "set T2V_HUB_CACHE to a writable folder"
        if instead == "this run is not cached":
            fix += ", or pass cache=False to skip the cache"
        warnings.warn(f"the cache folder {root} cannot be used ({why}), so {instead}: {fix}", RuntimeWarning,
                      stacklevel=2)
    return None


def scratch_dir(name: str) -> str:
    """A folder for short-lived files (unlinked as soon as opened): the cache's, else the system's temp."""
    tmp = tempfile.gettempdir()
    folder = cache_subdir(name, instead=f"decoded images go to {tmp}")
    return str(folder) if folder is not None else tmp
