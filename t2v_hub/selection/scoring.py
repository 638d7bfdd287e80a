"""Score and rank experts (hub models carrying a TASK2VEC embedding) for a target embedding.

The in-memory ranking behind :func:`t2v_hub.selection.recommend.recommend`. The
score of expert j for target t is ``d_asym(F_j -> t) = d_sym(F_j, t) - alpha *
d_sym(F_j, t0)`` (lower = better) or, with a trained MODEL2VEC selector,
``d_asym(m_j -> t) + offset_j`` with the selector's biased ``m_j``. All experts
are stacked in one matrix and scored in one vectorised pass
(:mod:`t2v_hub.selection.kernels.ranking`); the per-expert trivial-task term is computed
once per matrix. Variational experts that record their learned prior are scored in the
precision convention with each expert's own prior as t0 (:mod:`t2v_hub.selection.prior_term`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..config import check_count, check_names, is_finite_real
from ..constants import ASYM_ALPHA, DEFAULT_FISHER_METHOD, VARIATIONAL_ASYM_ALPHA
from ..embedding import Task2VecEmbedding
from ..errors import IncompatibleEmbeddingError, RecommendError
from .kernels.ranking import ExpertMatrix, sym_to_target
from .model2vec import Model2Vec
from .prior_term import has_learned_prior, prior_distances

logger = logging.getLogger(__name__)


class ExpertLike(Protocol):
    """What ranking needs of an expert (``t2v_hub.hub.Expert`` has it)."""

    repo_id: str
    embedding: Task2VecEmbedding
    task: str
    url: str


@dataclass(frozen=True)
class Recommendation:
    """One ranked expert. ``name`` is accepted by ``timm.create_model``."""

    rank: int
    name: str
    repo_id: str
    score: float  # what the ranking sorts by (lower = better)
    distance: float  # d_asym(expert -> target) without any learned bias
    probability: float | None  # selector's p(expert | task); None without a selector
    task: str  # dataset the expert was trained on
    url: str  # the model card
    explain: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # Two-stage ranking: which stage put the expert at this rank, and its transferability score.
    ordered_by: str = "task2vec"  # "task2vec" (stage 1) or the rerank metric ("logme", ...)
    stage1_rank: int | None = None
    transfer_score: float | None = None  # higher = better; None when not reranked
    # Why stage 2 scored it: "task2vec" (stage 1's top K), "generalist" (a selector's best average
    # expert, added to the shortlist; see generalist.py); None when it was not shortlisted.
    shortlisted_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timm_name(repo_id: str, hub: Any = None) -> str:
    """``local-dir:<path>`` for a repo of a local hub (a folder), ``hf-hub:<repo_id>`` for a Hub repo.

    Either way ``timm.create_model(name)`` loads the repo's own weights (``config.json`` +
    ``model.safetensors``); a local repo without them fails there with a clear error,
    not with a download attempt from huggingface.co under the same name.
    """
    root = getattr(hub, "root", None)
    if root is not None:
        return f"local-dir:{Path(root) / repo_id}"
    return f"hf-hub:{repo_id}"


def _label(e: Task2VecEmbedding) -> str:
    return f"{e.probe or '?'} ({e.method or DEFAULT_FISHER_METHOD})"


def partition_experts(
    target: Task2VecEmbedding, experts: Sequence[ExpertLike]
) -> tuple[list[ExpertLike], list[tuple[str, str]]]:
    """Experts whose embedding is comparable with ``target``, and the others with a reason."""
    ok: list[ExpertLike] = []
    skipped: list[tuple[str, str]] = []
    for ex in experts:
        try:
            target.check_compatible(ex.embedding)
        except IncompatibleEmbeddingError as exc:
            skipped.append((ex.repo_id, f"incompatible: {exc}"))
            continue
        ok.append(ex)
    return ok, skipped


def probes_available(experts: Sequence[ExpertLike]) -> str:
    counts = Counter(_label(ex.embedding) for ex in experts)
    return ", ".join(f"{p}: {n}" for p, n in counts.most_common()) or "none"


def resolve_trivial(
    target: Task2VecEmbedding, trivial: Task2VecEmbedding | torch.Tensor | None, selector: Model2Vec | None,
    notes: list[str],
) -> torch.Tensor:
    if selector is not None:
        if trivial is not None:
            notes.append("using the selector's trivial embedding (the one its biases were trained against)")
        return selector.trivial
    if trivial is None:
        from ..trivial import trivial_for

        trivial = trivial_for(target)
    if isinstance(trivial, Task2VecEmbedding):
        target.check_compatible(trivial)
        meta = trivial.metadata
        if meta.get("kind") != "trivial" and meta.get("dataset_id") != "<trivial>":
            # Allowed (a per-task t0 is a measured variant, BENCHMARKS.md), but rarely what was meant.
            notes.append(f"the trivial embedding given is that of a task ({meta.get('dataset_id') or 'unnamed'}), not one from "
                         "`t2v-hub trivial`: d_asym's second term measures the distance to that task")
        return trivial.vector
    t0 = torch.as_tensor(trivial, dtype=torch.float32).reshape(-1)
    if t0.numel() != target.dim:
        raise RecommendError(f"trivial embedding has {t0.numel()} entries, the target {target.dim}")
    return t0


def resolve_alpha(alpha: float | None, selector: Model2Vec | None, notes: list[str]) -> float:
    """``alpha``, else the selector's (so scores match its training), else ``ASYM_ALPHA``."""
    a = float(alpha if alpha is not None else (selector.alpha if selector is not None else ASYM_ALPHA))
    if selector is not None and abs(a - selector.alpha) > 1e-12:
        notes.append(f"alpha={a} differs from the selector's training alpha={selector.alpha}")
    return a


def top_rows(scores: torch.Tensor, top_k: int) -> list[int]:
    """The ``top_k`` lowest scores' rows, best first."""
    k = min(top_k, scores.numel())
    # Sort by (score, position) so equal scores keep the listing order: reproducible output.
    return sorted(torch.topk(scores, k, largest=False).indices.tolist(), key=lambda j: (float(scores[j]), j))


def top_rows_with(scores: torch.Tensor, top_k: int, include: Sequence[int] = ()) -> tuple[list[int], list[int]]:
    """:func:`top_rows` plus the rows ``include`` (the shortlist's generalists, wherever stage 1 put them),
    best first, and each row's rank among all of ``scores`` (1-based)."""
    top = top_rows(scores, top_k)
    extra = sorted(set(include) - set(top), key=lambda j: (float(scores[j]), j))
    if not extra:
        return top, list(range(1, len(top) + 1))
    # One sort for all of them (a selector can name thousands of experts on a large index): the rank is
    # the count of lower scores, plus equal scores listed earlier (exact ties only, counted directly).
    ordered = torch.sort(scores).values
    s = scores[torch.tensor(extra, dtype=torch.long)]
    below = torch.searchsorted(ordered, s, right=False).tolist()
    ties = (torch.searchsorted(ordered, s, right=True) - torch.searchsorted(ordered, s, right=False)).tolist()
    ranks = [1 + b + (int((scores[:j] == scores[j]).sum()) if t > 1 else 0) for j, b, t in zip(extra, below, ties,
                                                                                                strict=True)]
    return top + extra, list(range(1, len(top) + 1)) + ranks


def check_alpha(alpha: Any) -> None:
    """``alpha`` is None (the default) or a number in [0, 1]; recommend checks it before any embedding."""
    if alpha is not None and not (is_finite_real(alpha) and 0.0 <= alpha <= 1.0):
        raise RecommendError(f"alpha={alpha!r}: expected a number in [0, 1] (the weight of the trivial-task term)")


def _check_rank_args(target: Any, alpha: Any, selector: Any, trivial: Any, top_k: Any, include: Any,
                     notes: Any) -> tuple[list[str], list[str]]:
    """rank_experts' arguments, each named if of the wrong kind (not an AttributeError or a float() error
    from deep in the ranking); returns the notes list to append to and ``include`` as a list (one repo id
    as a str is one id, not its characters)."""
    if not isinstance(target, Task2VecEmbedding):
        raise RecommendError(f"target={type(target).__name__}: expected a Task2VecEmbedding")
    check_count("top_k", top_k, 1, error=RecommendError)
    check_alpha(alpha)
    if selector is not None and not isinstance(selector, Model2Vec):
        raise RecommendError(f"selector={selector!r}: expected a Model2Vec (t2v_hub.load_selector), or None")
    if trivial is not None and not isinstance(trivial, (Task2VecEmbedding, torch.Tensor)):
        raise RecommendError(f"trivial={trivial!r}: expected a Task2VecEmbedding or a tensor, or None")
    ids = check_names("include", [include] if isinstance(include, str) else include, "repo ids", error=RecommendError)
    if notes is not None and not isinstance(notes, list):
        raise RecommendError(f"notes={type(notes).__name__}: expected a list to append the notes to, or None")
    return (notes if notes is not None else []), ids


def rank_experts(
    target: Task2VecEmbedding,
    experts: Sequence[ExpertLike],
    *,
    alpha: float | None = None,
    selector: Model2Vec | None = None,
    trivial: Task2VecEmbedding | torch.Tensor | None = None,
    top_k: int = 5,
    name_for: Callable[[str], str] | None = None,
    notes: list[str] | None = None,
    dtype: torch.dtype = torch.float32,
    include: Sequence[str] = (),
) -> list[Recommendation]:
    """The ``top_k`` best experts for ``target``, best first, then those of ``include`` (repo ids) below them.

    Incompatible experts are left out (see :func:`partition_experts` to report them);
    if none is compatible the error names the probes the experts do have. ``alpha``
    defaults to the selector's (so scores match its training) or ``ASYM_ALPHA``.
    ``trivial`` defaults to the selector's t0, else the probe's (computed and cached); for
    variational embeddings that record their learned prior, each expert's own prior is its
    t0 instead and ``alpha`` defaults to ``VARIATIONAL_ASYM_ALPHA`` (:mod:`.prior_term`).
    Messages worth showing a person (unseen experts...) are appended to ``notes``.
    """
    notes, include = _check_rank_args(target, alpha, selector, trivial, top_k, include, notes)
    if not experts:
        raise RecommendError("no experts to rank: none was found (check hub= and filter=)")
    ok, skipped = partition_experts(target, experts)
    if not ok:
        raise RecommendError(
            f"no expert shares the target's embedding space {_label(target)}; experts are available for: "
            f"{probes_available(experts)}. Embed the dataset with one of those probes (probe=)"
        )
    if skipped:
        logger.info("%d expert(s) left out as incompatible", len(skipped))
    if selector is not None:
        selector.check_compatible(target)
    elif trivial is None and has_learned_prior(target):
        if all(has_learned_prior(ex.embedding) for ex in ok):
            return _rank_by_prior(target, ok, alpha, top_k, name_for, notes)
        notes.append("some variational experts record no learned prior: d_asym uses the probe's t0 for all")
    a = resolve_alpha(alpha, selector, notes)
    t0 = resolve_trivial(target, trivial, selector, notes)
    ids = [ex.repo_id for ex in ok]
    F = torch.stack([ex.embedding.vector for ex in ok])
    if selector is not None:
        M, offset, seen, sel_notes = selector.apply(ids, F)
        notes.extend(sel_notes)
    else:
        M, offset, seen = F, torch.zeros(len(ok)), torch.zeros(len(ok), dtype=torch.bool)
    if selector is not None and selector.filter_weights is not None:  # its own (weighted) metric
        scores = selector.distances(M, target.vector[None], a, t0)[0] + offset
    else:
        index = ExpertMatrix(M, t0, dtype=dtype)
        biased_sym = index.d_sym(target.vector)
        scores = biased_sym - a * index.to_trivial + offset
    pos = {r: j for j, r in enumerate(ids)}
    top, ranks = top_rows_with(scores, top_k, [pos[r] for r in include if r in pos])
    rows = torch.tensor(top, dtype=torch.long)
    # Unbiased distances for the chosen rows only (with a selector they differ from M's).
    d_task = sym_to_target(F[rows], target.vector) if selector is not None else biased_sym[rows]
    d_triv = sym_to_target(F[rows], t0) if selector is not None else index.to_trivial[rows]
    prob = torch.softmax(-selector.gamma * scores.double(), 0) if selector is not None else None
    return build_recommendations(
        top, scores, d_task, d_triv, a, offset, seen if selector is not None else None, prob,
        [ex.repo_id for ex in ok], [ex.task for ex in ok], [ex.url for ex in ok], name_for, ranks,
    )


def _rank_by_prior(target: Task2VecEmbedding, experts: Sequence[ExpertLike], alpha: float | None, top_k: int,
                   name_for: Callable[[str], str] | None, notes: list[str]) -> list[Recommendation]:
    """Variational embeddings: d_asym in the precision convention, each expert's own prior as its t0."""
    a = float(alpha if alpha is not None else VARIATIONAL_ASYM_ALPHA)
    d_task, d_own = prior_distances(target, [ex.embedding for ex in experts])
    scores = d_task - a * d_own
    top = top_rows(scores, top_k)
    rows = torch.tensor(top, dtype=torch.long)
    notes.append(f"variational embeddings: d_asym compares precisions, each expert's own learned prior as its t0 "
                 f"(alpha={a:g})")
    return build_recommendations(
        top, scores, d_task[rows], d_own[rows], a, torch.zeros(len(experts)), None, None,
        [ex.repo_id for ex in experts], [ex.task for ex in experts], [ex.url for ex in experts], name_for,
    )


def build_recommendations(
    top: Sequence[int],
    scores: torch.Tensor,
    d_task: torch.Tensor,
    d_triv: torch.Tensor,
    alpha: float,
    offset: torch.Tensor,
    seen: torch.Tensor | None,
    prob: torch.Tensor | None,
    ids: Sequence[str],
    tasks: Sequence[str],
    urls: Sequence[str],
    name_for: Callable[[str], str] | None = None,
    ranks: Sequence[int] | None = None,
) -> list[Recommendation]:
    """Recommendations for rows ``top`` (best first); ``d_task``/``d_triv`` are for those rows only.
    ``ranks``: each row's rank (default 1, 2, ...).

    ``seen`` is None without a selector (no bias); otherwise whether each row's expert
    was seen in training. Shared by :func:`rank_experts` and the expert index.
    """
    name = name_for or (lambda r: f"hf-hub:{r}")
    out = []
    ranks = list(ranks) if ranks is not None else list(range(1, len(top) + 1))
    for rank, j, dt, dz in zip(ranks, top, d_task.tolist(), d_triv.tolist(), strict=True):
        dist = dt - alpha * dz
        explain = {
            "d_sym_to_task": dt,
            "d_sym_to_trivial": dz,
            "alpha": alpha,
            "trivial_term": -alpha * dz,
            # Without a selector there is no bias: say 0 exactly, not float32-vs-float64 rounding.
            "bias": float(scores[j]) - dist if seen is not None else 0.0,
            "offset": float(offset[j]),
            "seen_in_training": bool(seen[j]) if seen is not None else None,
        }
        out.append(Recommendation(
            rank=rank, name=name(ids[j]), repo_id=ids[j], score=float(scores[j]), distance=dist,
            probability=float(prob[j]) if prob is not None else None, task=tasks[j], url=urls[j], explain=explain,
        ))
    return out


@dataclass(frozen=True)
class EmbedPlan:
    """How to embed a dataset so it is comparable with the experts."""

    probe: str
    method: str
    input_size: int | None
    include_norm: bool
    count: int  # experts embedded this way


__all__ = [
    "EmbedPlan",
    "ExpertLike",
    "Recommendation",
    "build_recommendations",
    "partition_experts",
    "probes_available",
    "rank_experts",
    "resolve_alpha",
    "resolve_trivial",
    "timm_name",
    "top_rows",
    "top_rows_with",
]
