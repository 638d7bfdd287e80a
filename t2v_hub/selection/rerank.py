"""Stage 2 of ``recommend``: rerank TASK2VEC's shortlist by a transferability score of each expert's features.

Stage 1 (TASK2VEC, one probe pass whatever the hub size) orders every expert; here
the top ``shortlist`` experts' own weights are loaded (a Hub repo holds them as
timm writes them, ``config.json`` + ``model.safetensors``; a LocalHub repo with those
files loads as ``local-dir:``), each computes features of the user's images once,
and the shortlist is ordered by the score. With a selector that records them, the
shortlist also holds its best "generalists" (``generalist.py``) from wherever stage 1
put them. The rest keep their stage-1 order below it. An expert whose weights are
missing, unloadable or too large keeps its stage-1 place (a generalist is passed over
for the next), and a note names it: nothing crashes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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


# Generalist candidates tried per slot: an expert without usable weights is passed over for the next
# best generalist, but a hub of weightless experts costs a few failed loads, not one per expert.
TRIES_PER_GENERALIST = 3


def rerank(
    recs: list[Recommendation], task: Any, metric: str, shortlist: int, notes: list[str], *,
    generalists: Sequence[Recommendation] = (), slots: int = 0, max_model_mb: float | None = None,
    batch_size: int = 32, device: Any = None, progress: Any = None,
) -> tuple[list[Recommendation], RerankCost]:
    """``recs`` (stage-1 order) with the first ``shortlist`` reordered by ``metric`` (higher = better).

    ``generalists`` (members of ``recs``, best generalist first) fill ``slots`` more places of the
    shortlist: the first ones stage 2 can score that are not among the first ``shortlist``.
    """
    cost = RerankCost()
    t0 = time.perf_counter()
    head = list(recs[:shortlist])
    first = {h.repo_id for h in head}
    pool = [r for r in generalists if r.repo_id not in first][: slots * TRIES_PER_GENERALIST]
    total = len(head) + min(slots, len(pool))
    scored: dict[str, float] = {}
    why: dict[str, str] = {}

    def score(r: Recommendation, i: int, kind: str) -> bool:
        if progress is not None:
            progress(r, i, total)
        try:
            one = score_model(r.name, task, metric, max_model_mb=max_model_mb, batch_size=batch_size, device=device)
        except TransferabilityError:  # about the task or the score, not this expert: every expert would fail
            raise
        except T2VError as exc:
            place = "keeps its TASK2VEC place" if kind == "task2vec" else "was passed over for a generalist slot"
            notes.append(f"{r.repo_id} {place} (not reranked): {exc}")
            return False
        scored[r.repo_id], why[r.repo_id] = one.score, kind
        cost.forward_passes += one.forward_passes
        cost.models_scored += 1
        return True

    for i, r in enumerate(head):
        score(r, i, "task2vec")
        why.setdefault(r.repo_id, "task2vec")
    added = 0
    for r in pool:
        if added == slots:
            break
        if score(r, len(head), "generalist"):
            head.append(r)
            added += 1
    # Scored experts share the shortlist slots they held, best score first; unscored ones keep theirs.
    places = [k for k, r in enumerate(head) if r.repo_id in scored]
    by_score = sorted((head[k] for k in places), key=lambda r: -scored[r.repo_id])  # stable: ties keep order
    order = list(head)
    for k, r in zip(places, by_score, strict=True):
        order[k] = r
    taken = {r.repo_id for r in head}
    out = [replace(r, ordered_by=metric if r.repo_id in scored else "task2vec",
                   transfer_score=scored.get(r.repo_id), shortlisted_by=why[r.repo_id]) for r in order]
    out += [r for r in recs[shortlist:] if r.repo_id not in taken]
    out = [replace(r, rank=rank, stage1_rank=r.rank) for rank, r in enumerate(out, start=1)]
    cost.seconds = round(time.perf_counter() - t0, 3)
    return out, cost


__all__ = ["DEFAULT_SHORTLIST", "RERANK_CHOICES", "RerankCost", "check_rerank", "rerank"]
