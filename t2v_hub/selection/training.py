"""MODEL2VEC training: learn the selector's per-expert biases from an error matrix.

Fits :class:`~t2v_hub.selection.model2vec.Model2Vec` by cross-entropy of
``softmax_j(-gamma * dasym_distances(m_j -> t_i))`` against soft labels
``softmax(-alpha_s * zscore(error_i))`` (supplement 4.3; the parametrisation is
described in :mod:`t2v_hub.selection.model2vec`). d_sym with gradients comes from the
fused numba kernel when available, else from the reference definition
(:func:`t2v_hub.selection.distances.sym_block`) through autograd.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch

from .. import constants as C
from ..config import check_flag
from ..embedding import Task2VecEmbedding
from ..errors import SelectorError
from .generalist import generalist_scores
from .layer_weights import check_layers, fit_layer_weights
from .model2vec import Model2Vec, SelectorConfig, _as_matrix, vector_digest
from .prior_offset import centred, cv_prior_weight

_TRAIN_CHUNK_ELEMENTS = 1 << 22
# Below this many elements per step, training runs single-threaded: with tensors this
# small, OpenMP fork/join costs more than it saves (measured 5-9x slower with 2 threads
# on a shared 2-core machine).
_SINGLE_THREAD_BELOW = 1 << 20


@contextmanager
def _threads(numel: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if numel >= _SINGLE_THREAD_BELOW or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)



# -- distances with gradients ---------------------------------------------------------------


def sym_distances(experts: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Differentiable d_sym, shape (tasks, experts). Same conventions as distances.cdist.

    With numba (and constant CPU ``tasks``) a fused kernel with a hand-written gradient
    (:mod:`t2v_hub.selection.kernels.sym_grad`, ~30x faster, no (tasks x experts x dim) temporaries);
    ``T2V_HUB_RANK_BACKEND=torch`` forces the autograd version below.
    """
    if _fused_ok(experts, tasks):
        from .kernels.sym_grad import sym_distances_fused

        return sym_distances_fused(experts, tasks)
    from .distances import sym_block

    return sym_block(tasks, experts)  # the reference definition, differentiated by autograd


def _fused_ok(experts: torch.Tensor, tasks: torch.Tensor) -> bool:
    from .kernels.ranking import backend
    from .kernels.sym_grad import available

    return (
        available() and backend() == "numba" and not tasks.requires_grad and experts.device.type == "cpu"
        and tasks.device.type == "cpu" and experts.dtype in (torch.float32, torch.float64)
    )


def soft_labels(errors: torch.Tensor, alpha_soft: float = C.M2V_ALPHA_SOFT) -> torch.Tensor:
    """``softmax(-alpha_soft * (e - mean e) / std e)`` per task over its known (finite) errors.

    std is the population std (ddof=0). Unknown cells get probability 0; a task whose
    known errors are all equal gets uniform labels over them; a task with no known
    error gets an all-zero row (the caller decides whether that is an error).
    """
    e = errors.to(torch.float64)
    known = torch.isfinite(e)
    cnt = known.sum(1, keepdim=True).clamp_min(1)
    filled = torch.where(known, e, torch.zeros((), dtype=e.dtype))
    mean = filled.sum(1, keepdim=True) / cnt
    var = (torch.where(known, e - mean, torch.zeros((), dtype=e.dtype)) ** 2).sum(1, keepdim=True) / cnt
    std = var.sqrt()
    z = torch.where(std > 0, (filled - mean) / std.clamp_min(1e-300), torch.zeros((), dtype=e.dtype))
    logits = torch.where(known, -alpha_soft * z, torch.full((), -torch.inf, dtype=e.dtype))
    p = torch.softmax(logits, dim=1)
    return torch.nan_to_num(p, nan=0.0).to(torch.float32)

# -- training ---------------------------------------------------------------------------------


def asym_distances(m: torch.Tensor, tasks: torch.Tensor, trivial: torch.Tensor, alpha: float) -> torch.Tensor:
    """dasym_distances(m_j -> t_i), shape (T, E), chunked over tasks (inference; training chunks itself)."""
    to_trivial = sym_distances(m, trivial[None])[0]  # (E,)
    rows = max(1, _TRAIN_CHUNK_ELEMENTS // max(1, m.shape[0] * m.shape[1]))
    parts = [sym_distances(m, tasks[i : i + rows]) for i in range(0, tasks.shape[0], rows)]
    return torch.cat(parts) - alpha * to_trivial


def _masked_ce(d: torch.Tensor, labels: torch.Tensor, known: torch.Tensor, log_gamma: torch.Tensor) -> torch.Tensor:
    logits = torch.where(known, -log_gamma.exp() * d, torch.full((), -torch.inf))
    logp = torch.log_softmax(logits, dim=1)
    return -(labels * torch.where(known, logp, torch.zeros(()))).sum()


def train_model2vec(
    tasks: torch.Tensor,
    experts: torch.Tensor,
    errors: torch.Tensor,
    trivial: torch.Tensor,
    config: SelectorConfig | None = None,
    *,
    expert_ids: Sequence[str] | None = None,
    compat: dict[str, str] | None = None,
    task_ids: Sequence[str] | None = None,
    layers: torch.Tensor | None = None,
) -> Model2Vec:
    """Fit MODEL2VEC on ``errors`` (T, E; NaN = unknown) for task embeddings (T, dim)
    and expert embeddings (E, dim). Deterministic for fixed inputs and ``config.seed``.

    ``layers`` (dim,): each filter's layer id, needed by ``bias="layer"`` only
    (:func:`t2v_hub.selection.layer_weights.layer_ids`). With ``config.prior="cv"`` the selector is
    trained ``config.prior_folds`` more times, on all but one cluster of the tasks each, to weigh the
    static prior in its offsets (:mod:`.prior_offset`; the weight is ``info["prior_weight"]``)."""
    cfg = _check_config(config)
    for name, value in (("expert_ids", expert_ids), ("task_ids", task_ids)):
        if value is not None and (isinstance(value, str) or not isinstance(value, Sequence)
                                  or not all(isinstance(v, str) for v in value)):
            raise SelectorError(f"{name}={value!r}: expected a list of id strings, or None")
    if compat is not None and not isinstance(compat, dict):
        raise SelectorError(f"compat={compat!r}: expected a dict (probe, weights_sha256, ...), or None")
    sel = _train(tasks, experts, errors, trivial, cfg, expert_ids=expert_ids, compat=compat, task_ids=task_ids,
                 layers=layers)
    if cfg.prior == "none":
        return sel
    X, F, E, t0 = _as_inputs(tasks, experts, errors, trivial)

    def score_rows(train: list[int], held: list[int]) -> torch.Tensor:
        inner = _train(X[train], F, E[train], t0, cfg, expert_ids=sel.expert_ids, layers=layers)
        return inner.scores(X[held], inner.expert_ids, F)

    beta, record = cv_prior_weight(X, E, score_rows, folds=cfg.prior_folds)
    return replace(sel, offset=sel.offset + beta * centred(sel.generalist),
                   info={**sel.info, "prior_weight": beta, "prior_cv": record})


def _check_config(config: Any) -> SelectorConfig:
    if config is None:
        return SelectorConfig()
    if not isinstance(config, SelectorConfig):
        raise SelectorError(f"config={config!r}: expected a t2v_hub.SelectorConfig, or None for the defaults")
    return config


def _train(
    tasks: torch.Tensor, experts: torch.Tensor, errors: torch.Tensor, trivial: torch.Tensor, cfg: SelectorConfig,
    *, expert_ids: Sequence[str] | None, layers: torch.Tensor | None, compat: dict[str, str] | None = None,
    task_ids: Sequence[str] | None = None,
) -> Model2Vec:
    """MODEL2VEC without the prior offset: the supplement's training, or the layer weights."""
    X, F, errors, t0 = _as_inputs(tasks, experts, errors, trivial)
    T, E = errors.shape
    if X.shape[0] != T or F.shape[0] != E or X.shape[1] != F.shape[1] or t0.numel() != F.shape[1]:
        raise SelectorError(
            f"shapes disagree: errors {tuple(errors.shape)}, tasks {tuple(X.shape)}, experts {tuple(F.shape)}, "
            f"trivial {t0.numel()}"
        )
    ids = list(expert_ids) if expert_ids is not None else [str(j) for j in range(E)]
    if len(ids) != E or len(set(ids)) != E:
        raise SelectorError(f"expert_ids: expected {E} distinct ids (one per expert), got {len(ids)} "
                            f"({len(set(ids))} distinct)")
    known = torch.isfinite(errors)
    empty = (~known.any(1)).nonzero().flatten().tolist()
    if empty:
        names = [task_ids[i] if task_ids is not None else str(i) for i in empty]
        raise SelectorError(f"task(s) with no known error for any expert: {', '.join(names[:5])}; "
                            "remove them from the error matrix or fill in their errors")
    labels = soft_labels(errors, cfg.alpha_soft)
    if cfg.bias == "layer":
        sel = _train_layers(X, F, t0, labels, known, check_layers(layers, F.shape[1]), cfg, ids, compat, task_ids)
        return replace(sel, generalist=generalist_scores(errors))
    use_scale, use_offset = cfg.bias in ("both", "filter"), cfg.bias in ("both", "scalar")
    log_scale = torch.zeros_like(F, requires_grad=use_scale)
    offset = torch.zeros(E, requires_grad=use_offset)
    with torch.no_grad():
        d0 = asym_distances(F, X, t0, cfg.alpha)
        spread = _masked_std(d0, known).mean().clamp_min(1e-6)
    log_gamma = (-spread.log()).clone().requires_grad_(True)
    decayed = [p for p, on in ((log_scale, use_scale), (offset, use_offset)) if on]
    groups: list[dict[str, Any]] = [{"params": [log_gamma], "weight_decay": 0.0}]
    if decayed:
        groups.append({"params": decayed, "weight_decay": cfg.weight_decay})
    opt = torch.optim.Adam(groups, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = cfg.batch_size or T
    with _threads(min(bs, T) * E * F.shape[1]):
        losses = _fit(opt, X, F, t0, labels, known, log_scale, offset, log_gamma, cfg, gen, use_scale)
    info = {
        "num_tasks": T,
        "num_experts": E,
        "known_cells": int(known.sum()),
        "skipped_cells": int((~known).sum()),
        "single_expert_tasks": int((known.sum(1) == 1).sum()),
        "tasks_per_expert": _tasks_per_expert(ids, known),
        "initial_gamma": float(spread.reciprocal()),
        "final_loss": losses[-1] if losses else None,
        "task_ids": list(task_ids) if task_ids is not None else None,
    }
    return Model2Vec(
        expert_ids=ids,
        log_scale=log_scale.detach().clone() if use_scale else None,
        offset=offset.detach().clone(),
        log_gamma=float(log_gamma.detach()),
        trivial=t0.clone(),
        config=cfg,
        compat=dict(compat or {}),
        expert_digests=[vector_digest(v) for v in F],
        info=info,
        generalist=generalist_scores(errors),
    )


def _as_inputs(tasks: Any, experts: Any, errors: Any, trivial: Any
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 tensors of train_model2vec's inputs, or a SelectorError naming the one that is not usable."""
    out = []
    for name, value, dims in (("tasks", tasks, 2), ("experts", experts, 2), ("errors", errors, 2),
                              ("trivial", trivial, 1)):
        try:
            t = torch.as_tensor(value.vector if isinstance(value, Task2VecEmbedding) else value, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise SelectorError(f"{name}={type(value).__name__}: expected a tensor of numbers ({exc})") from None
        t = t.reshape(-1) if dims == 1 else t
        if t.dim() != dims:
            raise SelectorError(f"{name} has shape {tuple(t.shape)}: expected {dims} dimension(s)")
        if name != "errors" and not bool((torch.isfinite(t) & (t >= 0)).all()):
            raise SelectorError(f"{name} holds negative, NaN or Inf entries: a Fisher embedding is finite and >= 0")
        out.append(t)
    e = out[2]
    if bool((torch.isinf(e) | (e < 0)).any()):  # any scale works (a regression's RMSE too); negative is no error
        raise SelectorError("errors must be finite and >= 0, NaN where unknown (test errors: fractions in [0, 1])")
    return out[0], out[1], out[2], out[3]


def _train_layers(
    X: torch.Tensor, F: torch.Tensor, t0: torch.Tensor, labels: torch.Tensor, known: torch.Tensor,
    layers: torch.Tensor, cfg: SelectorConfig, ids: list[str], compat: dict[str, str] | None,
    task_ids: Sequence[str] | None,
) -> Model2Vec:
    theta, log_gamma, losses = fit_layer_weights(X, F, t0, labels, known, layers, cfg)
    info = {
        "num_tasks": X.shape[0], "num_experts": F.shape[0], "known_cells": int(known.sum()),
        "skipped_cells": int((~known).sum()), "single_expert_tasks": int((known.sum(1) == 1).sum()),
        "tasks_per_expert": _tasks_per_expert(ids, known), "num_layers": int(theta.numel()), "layer_weights": [round(float(w), 4) for w in theta.exp()],
        "final_loss": losses[-1] if losses else None, "task_ids": list(task_ids) if task_ids is not None else None,
    }
    return Model2Vec(
        expert_ids=ids, log_scale=None, offset=torch.zeros(F.shape[0]), log_gamma=log_gamma, trivial=t0.clone(),
        config=cfg, compat=dict(compat or {}), expert_digests=[vector_digest(v) for v in F], info=info,
        filter_weights=theta.exp()[layers].contiguous(),
    )


def _fit(
    opt: torch.optim.Optimizer, X: torch.Tensor, F: torch.Tensor, t0: torch.Tensor, labels: torch.Tensor,
    known: torch.Tensor, log_scale: torch.Tensor, offset: torch.Tensor, log_gamma: torch.Tensor,
    cfg: SelectorConfig, gen: torch.Generator, use_scale: bool,
) -> list[float]:
    """The epochs of Adam; returns the mean loss of each epoch."""
    T = X.shape[0]
    bs = cfg.batch_size or T
    rows = max(1, _TRAIN_CHUNK_ELEMENTS // max(1, F.shape[0] * F.shape[1]))
    losses: list[float] = []
    for _ in range(cfg.epochs):
        order = torch.randperm(T, generator=gen) if bs < T else torch.arange(T)
        total = 0.0
        for s in range(0, T, bs):
            idx = order[s : s + bs]
            opt.zero_grad()
            # The loss is a sum over tasks: backward chunk by chunk so that only one
            # chunk's (tasks x experts x dim) graph is alive at a time.
            for c in range(0, idx.numel(), rows):
                sub = idx[c : c + rows]
                m = F * log_scale.exp() if use_scale else F
                to_trivial = sym_distances(m, t0[None])[0]
                d = sym_distances(m, X[sub]) - cfg.alpha * to_trivial + offset
                loss = _masked_ce(d, labels[sub], known[sub], log_gamma) / idx.numel()
                loss.backward()
                total += loss.detach().item() * idx.numel()
            opt.step()
        losses.append(total / T)
    return losses


def _masked_std(d: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    cnt = known.sum(1).clamp_min(1)
    z = torch.where(known, d, torch.zeros(()))
    mean = z.sum(1) / cnt
    var = (torch.where(known, d - mean[:, None], torch.zeros(())) ** 2).sum(1) / cnt
    return var.sqrt()


def loo_model2vec(
    task_embs: torch.Tensor | Sequence[Task2VecEmbedding],
    expert_embs: torch.Tensor | Sequence[Task2VecEmbedding],
    errors: torch.Tensor,
    trivial: torch.Tensor | Task2VecEmbedding,
    config: SelectorConfig | None = None,
    *,
    progress: bool = False,
    layers: torch.Tensor | None = None,
) -> torch.Tensor:
    """Leave-one-out MODEL2VEC scores (T, E), lower = better: row i comes from a
    selector trained on every other task's errors (row i's errors are never seen).
    ``progress`` shows a bar on stderr (one selector per task: minutes on a big zoo)."""
    config = _check_config(config)
    check_flag("progress", progress, error=SelectorError)
    X, F = _as_matrix(task_embs), _as_matrix(expert_embs)
    t0 = trivial.vector if isinstance(trivial, Task2VecEmbedding) else torch.as_tensor(trivial, dtype=torch.float32)
    T = X.shape[0]
    known_rows = torch.isfinite(errors).any(1)
    out = torch.full(errors.shape, float("nan"))
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=T, desc="MODEL2VEC leave-one-out", unit="task", file=sys.stderr, leave=False)
    for i in range(T):
        if bar is not None:
            bar.update(1)
        train = known_rows.clone()
        train[i] = False
        if not bool(train.any()):
            raise SelectorError("leave-one-out needs at least two tasks with known errors")
        sel = train_model2vec(X[train], F, errors[train], t0, config, layers=layers)
        out[i] = sel.scores(X[i], sel.expert_ids, F)[0]
    if bar is not None:
        bar.close()
    return out



__all__ = ["asym_distances", "loo_model2vec", "soft_labels", "sym_distances", "train_model2vec"]


def _tasks_per_expert(ids: list[str], known: torch.Tensor) -> dict[str, int]:
    """How many training tasks have a known error for each expert: what backs its bias (an
    expert's own task is usually missing, and few tasks mean a bias that has to be shrunk)."""
    return {e: int(n) for e, n in zip(ids, known.sum(0).tolist(), strict=True)}
