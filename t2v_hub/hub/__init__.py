"""Hub integration: attach TASK2VEC embeddings to model repos and find experts.

``get_hub("hf" | URL | PATH)`` gives a backend; ``push_embedding`` attaches an
embedding in one commit; ``load_embedding`` and ``list_experts`` read them back,
verified against the card's sha256. See ``api.py`` for the storage layout.
"""

from __future__ import annotations

from .api import (
    Expert,
    PushResult,
    embedding_bytes,
    embedding_path,
    get_hub,
    list_experts,
    load_embedding,
    make_entry,
    probe_slug,
    push_embedding,
    verify_embedding,
)
from .base import CardState, CommitResult, CommitUncertainError, Hub, HubFileNotFoundError, ModelListing
from .local import LocalHub


def __getattr__(name: str) -> object:
    # HfHub imports huggingface_hub's HTTP stack: only when asked for.
    if name == "HfHub":
        from .hf import HfHub

        return HfHub
    raise AttributeError(name)


__all__ = [
    "CardState",
    "CommitResult",
    "CommitUncertainError",
    "Expert",
    "HfHub",
    "Hub",
    "HubFileNotFoundError",
    "LocalHub",
    "ModelListing",
    "PushResult",
    "embedding_bytes",
    "embedding_path",
    "get_hub",
    "list_experts",
    "load_embedding",
    "make_entry",
    "probe_slug",
    "push_embedding",
    "verify_embedding",
]
