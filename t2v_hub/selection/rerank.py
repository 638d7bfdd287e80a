"""Stage 2 of ``recommend``: rerank TASK2VEC's shortlist by a transferability score of each expert's features.

Stage 1 (TASK2VEC, one probe pass whatever the hub size) orders every expert; here
the top ``shortlist`` experts' own weights are loaded (a Hub repo holds them as
timm writes them, ``config.json`` + ``model.safetensors``; a LocalHub repo with those
files loads as ``local-dir:``), each computes features of the user's images once,
and the shortlist is ordered by the score. The rest keep their stage-1 order below
it. An expert whose weights are missing, unloadable or too large keeps its stage-1
place, and a note names it: nothing crashes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

from ..constants import DEFAULT_SHORTLIST
from ..errors import T2VError
from .features import score_model
from .scoring import Recommendation
from .transferability import TransferabilityError, get_score

RERANK_CHOICES = ("none", "logme", "hscore", "knn")


@dataclass
class RerankCost:
    forward_passes: int = 0  # images through expert models
    models_scored: int = 0
    seconds: float = 0.0


def check_rerank(rerank: str, shortlist: int) -> None:
    if rerank not in RERANK_CHOICES:
        raise T2VError(f"rerank must be one of {', '.join(RERANK_CHOICES)}, got {rerank!r}")
    if rerank != "none":
        get_score(rerank)
    if shortlist < 1:
        raise T2VError(f"shortlist must be at least 1, got {shortlist}")


def rerank(
    recs: list[Recommendation], task: Any, metric: str, shortlist: int, notes: list[str], *,
    max_model_mb: float | None = None, batch_size: int = 32, device: Any = None, progress: Any = None,
) -> tuple[list[Recommendation], RerankCost]:
    """``recs`` (stage-1 order) with the first ``shortlist`` reordered by ``metric`` (higher = better)."""
    cost = RerankCost()
    t0 = time.perf_counter()
    head, tail = recs[:shortlist], recs[shortlist:]
    scored: dict[int, float] = {}
    for i, r in enumerate(head):
        if progress is not None:
            progress(r, i, len(head))
        try:
            one = score_model(r.name, task, metric, max_model_mb=max_model_mb, batch_size=batch_size, device=device)
        except TransferabilityError:  # about the task or the score, not this expert: every expert would fail
            raise
        except T2VError as exc:
            notes.append(f"{r.repo_id} keeps its TASK2VEC place (not reranked): {exc}")
            continue
        scored[i] = one.score
        cost.forward_passes += one.forward_passes
        cost.models_scored += 1
    # Scored experts share the shortlist slots they held, best score first; unscored ones keep theirs.
    slots = sorted(scored)
    by_score = sorted(slots, key=lambda i: (-scored[i], i))
    order = list(range(len(head)))
    for slot, i in zip(slots, by_score, strict=True):
        order[slot] = i
    out = []
    for rank, i in enumerate(order, start=1):
        r = head[i]
        out.append(replace(r, rank=rank, stage1_rank=r.rank, ordered_by=metric if i in scored else "task2vec",
                           transfer_score=scored.get(i)))
    out += [replace(r, stage1_rank=r.rank) for r in tail]
    cost.seconds = round(time.perf_counter() - t0, 3)
    return out, cost


__all__ = ["DEFAULT_SHORTLIST", "RERANK_CHOICES", "RerankCost", "check_rerank", "rerank"]
