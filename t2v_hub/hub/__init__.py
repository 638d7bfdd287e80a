"""Hub integration: attach TASK2VEC embeddings to model repos and find experts.

``get_hub("hf" | URL | PATH)`` gives a backend; ``push_embedding`` attaches an
embedding in one commit; ``load_embedding`` and ``list_experts`` read them back,
verified against the card's sha256. See ``api.py`` for the storage layout,
``listing.py`` for reading back, ``local.py``/``hf.py`` for the backends and
``card.py`` for editing model cards.

Floor 1, pure I/O: imports ``errors``, ``constants`` and ``embedding`` only; error
matrices from ``.eval_results`` are parsed in :mod:`t2v_hub.selection.eval_results`.
"""

from __future__ import annotations

from .api import (
    Expert,
    PushResult,
    embedding_bytes,
    embedding_path,
    get_hub,
    make_entry,
    probe_slug,
    push_embedding,
)
from .base import CardState, CommitResult, CommitUncertainError, Hub, HubFileNotFoundError, ModelListing
from .listing import list_experts, load_embedding, verify_embedding
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
