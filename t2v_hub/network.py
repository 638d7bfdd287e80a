"""Can the Hub be reached at all? Asked once, in seconds, before a library's retries.

A machine without network otherwise spends 24-48 s in huggingface_hub's retries (five, with
backoff) before reporting "not found", which is also the wrong diagnosis.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

REACH_TIMEOUT_S = 3.0


def hub_endpoint() -> str:
    """The endpoint huggingface_hub will use: ``HF_ENDPOINT``, else huggingface.co."""
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"


def unreachable(endpoint: str, timeout: float = REACH_TIMEOUT_S) -> str | None:
    """None if a TCP connection to ``endpoint``'s host opens within ``timeout`` s, else why not."""
    u = urlsplit(endpoint)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


__all__ = ["REACH_TIMEOUT_S", "hub_endpoint", "unreachable"]
