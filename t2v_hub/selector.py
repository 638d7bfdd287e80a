"""MODEL2VEC expert selection (supplement 4.3): learn a bias per expert from an error matrix.

Without training data, experts are ranked by ``d_asym(expert -> target)``. With
an error matrix (tasks x experts: the test error of a classifier trained for
task i on top of expert j), MODEL2VEC learns a representation ``m_j`` of each
expert and a temperature ``gamma > 0``; ``p(j | task i) = softmax_j(-gamma *
d_ij)`` is fitted by cross-entropy to soft labels ``softmax(-alpha_s *
zscore(error_i))``.

Parametrisation (the supplement writes ``m_j = F_j + b_j``; our reading):

- ``log_scale`` (E, dim): ``m_j = F_j * exp(log_scale_j)``, i.e. the bias is
  additive in log-Fisher space (``b_j = F_j * (exp(log_scale_j) - 1)``). An
  additive bias in raw Fisher space would not stay non-negative, and one learning
  rate cannot suit entries spanning many orders of magnitude (Adam's steps are
  about ``lr`` in absolute size: 0.05 is nothing for a filter at 1e2 and
  everything for one at 1e-6). ``d_sym`` is invariant to per-filter scale, so a
  log-scale is the natural unit. Zero init gives ``m_j = F_j``.
- ``offset`` (E,): a scalar added to the expert's distance. The supplement's
  vector bias can only make an expert look better for every task indirectly
  (moving ``m_j`` towards the centre of the tasks); a per-expert offset says
  "this expert is better/worse in general" directly, with one parameter instead
  of ``dim``, which matters with tens of training tasks. Softmax ignores a common
  shift; weight decay pins the mean near zero.
- ``log_gamma``: gamma = exp(log_gamma) > 0 by construction. It is excluded from
  weight decay, which would pull gamma towards 1, a value with no meaning in
  distance units. Its initial value is 1 / (mean per-task spread of the initial
  distances), so the initial logits spread by about one unit.

``SelectorConfig.bias`` picks ``"both"`` (default), ``"filter"`` (the
supplement's vector bias only), ``"scalar"`` or ``"none"`` (only gamma).

Direction: the supplement writes ``d_asym(t_i, m_j)``; we use the main text's
convention, the expert as the source: ``d_asym(m_j -> t_i) = d_sym(m_j, t_i) -
alpha * d_sym(m_j, t0)``, so the trivial-task term is the expert's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import constants as C
from .embedding import COMPAT_FIELDS, Task2VecEmbedding, atomic_write_bytes
from .errors import SelectorError

SELECTOR_FORMAT = "t2v-hub-selector"
SELECTOR_FILE = "selector.safetensors"
BIAS_KINDS = ("both", "filter", "scalar", "none")
# (tasks x experts x dim) elements per differentiable distance chunk: bounds memory.
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


@dataclass(frozen=True)
class SelectorConfig:
    """Training settings of MODEL2VEC; defaults from supplement 4.3. Recorded in the artifact."""

    alpha: float = C.ASYM_ALPHA  # weight of the trivial-task term in d_asym
    alpha_soft: float = C.M2V_ALPHA_SOFT  # sharpness of the soft labels
    lr: float = C.M2V_LR
    weight_decay: float = C.M2V_WEIGHT_DECAY
    epochs: int = C.M2V_EPOCHS
    batch_size: int = 0  # tasks per Adam step; 0 = all tasks (one step per epoch)
    bias: str = "both"
    seed: int = 0  # order of tasks when batch_size > 0

    def __post_init__(self) -> None:
        if self.bias not in BIAS_KINDS:
            raise SelectorError(f"bias must be one of {', '.join(BIAS_KINDS)}, got {self.bias!r}")
        if self.epochs < 0 or self.batch_size < 0 or self.lr <= 0 or self.alpha_soft <= 0:
            raise SelectorError("epochs and batch_size must be >= 0, lr and alpha_soft > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectorConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


# -- distances with gradients ---------------------------------------------------------------


def sym_distances(experts: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
    """Differentiable d_sym, shape (tasks, experts). Same conventions as distances.cdist.

    With numba (and constant CPU ``tasks``) a fused kernel with a hand-written gradient
    (:mod:`t2v_hub.sym_grad`, ~30x faster, no (tasks x experts x dim) temporaries);
    ``T2V_HUB_RANK_BACKEND=torch`` forces the autograd version below.
    """
    if _fused_ok(experts, tasks):
        from .sym_grad import sym_distances_fused

        return sym_distances_fused(experts, tasks)
    s = tasks[:, None, :] + experts[None, :, :]
    inv = torch.where(s > 0, 1.0 / s.clamp_min(1e-38), torch.zeros((), dtype=s.dtype))
    u = experts[None] * inv
    v = tasks[:, None] * inv
    # sqrt of the clamped product: an all-zero expert gets d = 1 and a zero gradient, not NaN.
    cos = (u * v).sum(-1) / ((u * u).sum(-1) * (v * v).sum(-1)).clamp_min(torch.finfo(s.dtype).tiny).sqrt()
    return (1.0 - cos).clamp(0.0, 2.0)


def _fused_ok(experts: torch.Tensor, tasks: torch.Tensor) -> bool:
    from .ranking_kernel import backend
    from .sym_grad import available

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


# -- the trained selector ---------------------------------------------------------------------


def vector_digest(v: torch.Tensor) -> str:
    return hashlib.sha256(v.detach().to(torch.float32).contiguous().numpy().tobytes()).hexdigest()[:16]


@dataclass
class Model2Vec:
    """A trained MODEL2VEC selector: per-expert biases, temperature, and its provenance."""

    expert_ids: list[str]
    log_scale: torch.Tensor | None  # (E, dim) or None
    offset: torch.Tensor  # (E,)
    log_gamma: float
    trivial: torch.Tensor  # (dim,) the t0 the biases were trained against
    config: SelectorConfig
    compat: dict[str, str]  # probe, weights_sha256, layout_hash, dim, method of the embeddings
    expert_digests: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gamma(self) -> float:
        return float(torch.tensor(self.log_gamma).exp())

    @property
    def alpha(self) -> float:
        return self.config.alpha

    # -- applying ---------------------------------------------------------------------------
    def check_compatible(self, embedding: Task2VecEmbedding) -> None:
        """SelectorError unless ``embedding`` lives in the space the selector was trained in."""
        for f in COMPAT_FIELDS:
            want, got = self.compat.get(f, ""), embedding.metadata.get(f, "")
            if want != got:
                raise SelectorError(
                    f"the selector was trained for {f}={want!r} but the embedding has {f}={got!r}; "
                    f"train a selector for these embeddings or embed with the selector's probe ({self.compat.get('probe')})"
                )

    def apply(
        self, expert_ids: Sequence[str], vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Biased expert matrix m (E', dim), offsets (E',), seen mask (E',), notes.

        Experts unseen in training keep m_j = F_j and offset 0 (a note says so); if no
        expert was seen in training the selector belongs to another expert set: error.
        """
        index = {e: k for k, e in enumerate(self.expert_ids)}
        rows = [index.get(e, -1) for e in expert_ids]
        seen = torch.tensor([r >= 0 for r in rows], dtype=torch.bool)
        if len(rows) and not bool(seen.any()):
            raise SelectorError(
                f"the selector was trained for a different expert set ({len(self.expert_ids)} experts, e.g. "
                f"{', '.join(self.expert_ids[:3])}); none of the {len(rows)} experts given is among them. "
                "Train a selector on these experts (`t2v-hub selector train`)"
            )
        notes: list[str] = []
        unseen = [e for e, r in zip(expert_ids, rows, strict=True) if r < 0]
        if unseen:
            notes.append(
                f"{len(unseen)} expert(s) unseen in training ranked with no learned bias (b_j = 0): "
                + ", ".join(unseen[:5]) + (" ..." if len(unseen) > 5 else "")
            )
        if vectors.shape[-1] != self.trivial.numel():
            raise SelectorError(f"expert embeddings have {vectors.shape[-1]} entries, the selector {self.trivial.numel()}")
        idx = torch.tensor([max(r, 0) for r in rows], dtype=torch.long)
        m = vectors.to(torch.float32)
        if self.log_scale is not None and len(rows):
            scale = torch.where(seen[:, None], self.log_scale[idx].exp(), torch.ones(()))
            m = m * scale
        offset = torch.where(seen, self.offset[idx], torch.zeros(())) if len(rows) else torch.zeros(0)
        if self.expert_digests:
            changed = [
                e for e, r, v in zip(expert_ids, rows, vectors, strict=True)
                if r >= 0 and self.expert_digests[r] != vector_digest(v)
            ]
            if changed:
                notes.append(f"{len(changed)} expert embedding(s) changed since training; their learned bias is reused: "
                             + ", ".join(changed[:5]))
        return m, offset, seen, notes

    def scores(self, targets: torch.Tensor, expert_ids: Sequence[str], vectors: torch.Tensor) -> torch.Tensor:
        """Selector scores (lower = better), shape (T, E'): d_asym(m_j -> t_i) + offset_j."""
        m, offset, _, _ = self.apply(expert_ids, vectors)
        with torch.no_grad():
            return _asym(m, targets.reshape(-1, m.shape[-1]), self.trivial, self.alpha) + offset

    # -- artifact -----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.torch import save as st_save

        from . import __version__

        tensors = {"offset": self.offset.contiguous(), "log_gamma": torch.tensor([self.log_gamma]),
                   "trivial": self.trivial.contiguous()}
        if self.log_scale is not None:
            tensors["log_scale"] = self.log_scale.contiguous()
        meta = {
            "format": SELECTOR_FORMAT,
            "format_version": "1",
            "config": json.dumps(asdict(self.config), sort_keys=True),
            "expert_ids": json.dumps(self.expert_ids),
            "expert_digests": json.dumps(self.expert_digests),
            "info": json.dumps(self.info, sort_keys=True, default=str),
            "gamma": f"{self.gamma:.6g}",
            "alpha": str(self.alpha),
            "t2v_hub_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{f"compat_{k}": v for k, v in self.compat.items()},
        }
        return st_save(tensors, metadata=meta)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Model2Vec:
        from safetensors.torch import load as st_load

        try:
            tensors = st_load(data)
            n = int.from_bytes(data[:8], "little")
            meta = dict(json.loads(data[8 : 8 + n]).get("__metadata__") or {})
        except Exception as exc:  # safetensors raises several types on garbage
            raise SelectorError(f"{source}: not a valid safetensors file ({exc})") from exc
        if meta.get("format") != SELECTOR_FORMAT:
            raise SelectorError(f"{source}: not a t2v-hub selector (an embedding? train one with `t2v-hub selector train`)")
        try:
            ids = json.loads(meta["expert_ids"])
            config = SelectorConfig.from_dict(json.loads(meta["config"]))
            out = cls(
                expert_ids=list(ids),
                log_scale=tensors.get("log_scale"),
                offset=tensors["offset"].to(torch.float32),
                log_gamma=float(tensors["log_gamma"][0]),
                trivial=tensors["trivial"].to(torch.float32),
                config=config,
                compat={k[len("compat_"):]: v for k, v in meta.items() if k.startswith("compat_")},
                expert_digests=list(json.loads(meta.get("expert_digests", "[]"))),
                info=dict(json.loads(meta.get("info", "{}"))),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise SelectorError(f"{source}: malformed selector file ({exc})") from exc
        if out.offset.numel() != len(ids) or (out.log_scale is not None and out.log_scale.shape[0] != len(ids)):
            raise SelectorError(f"{source}: tensor sizes do not match its {len(ids)} expert ids")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model2Vec:
        p = Path(path)
        if not p.is_file():
            raise SelectorError(f"selector file {str(p)!r} not found; train one with `t2v-hub selector train`")
        return cls.from_bytes(p.read_bytes(), source=str(p))


# -- training ---------------------------------------------------------------------------------


def _asym(m: torch.Tensor, tasks: torch.Tensor, trivial: torch.Tensor, alpha: float) -> torch.Tensor:
    """d_asym(m_j -> t_i), shape (T, E), chunked over tasks (inference; training chunks itself)."""
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
) -> Model2Vec:
    """Fit MODEL2VEC on ``errors`` (T, E; NaN = unknown) for task embeddings (T, dim)
    and expert embeddings (E, dim). Deterministic for fixed inputs and ``config.seed``."""
    cfg = config or SelectorConfig()
    X, F = tasks.to(torch.float32), experts.to(torch.float32)
    t0 = torch.as_tensor(trivial, dtype=torch.float32).reshape(-1)
    T, E = errors.shape
    if X.shape[0] != T or F.shape[0] != E or X.shape[1] != F.shape[1] or t0.numel() != F.shape[1]:
        raise SelectorError(
            f"shapes disagree: errors {tuple(errors.shape)}, tasks {tuple(X.shape)}, experts {tuple(F.shape)}, "
            f"trivial {t0.numel()}"
        )
    ids = list(expert_ids) if expert_ids is not None else [str(j) for j in range(E)]
    known = torch.isfinite(errors)
    empty = (~known.any(1)).nonzero().flatten().tolist()
    if empty:
        names = [task_ids[i] if task_ids is not None else str(i) for i in empty]
        raise SelectorError(f"task(s) with no known error for any expert: {', '.join(names[:5])}; "
                            "remove them from the error matrix or fill in their errors")
    labels = soft_labels(errors, cfg.alpha_soft)
    use_scale, use_offset = cfg.bias in ("both", "filter"), cfg.bias in ("both", "scalar")
    log_scale = torch.zeros_like(F, requires_grad=use_scale)
    offset = torch.zeros(E, requires_grad=use_offset)
    with torch.no_grad():
        d0 = _asym(F, X, t0, cfg.alpha)
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
) -> torch.Tensor:
    """Leave-one-out MODEL2VEC scores (T, E), lower = better: row i comes from a
    selector trained on every other task's errors (row i's errors are never seen)."""
    X, F = _as_matrix(task_embs), _as_matrix(expert_embs)
    t0 = trivial.vector if isinstance(trivial, Task2VecEmbedding) else torch.as_tensor(trivial, dtype=torch.float32)
    T = X.shape[0]
    known_rows = torch.isfinite(errors).any(1)
    out = torch.full(errors.shape, float("nan"))
    for i in range(T):
        train = known_rows.clone()
        train[i] = False
        if not bool(train.any()):
            raise SelectorError("leave-one-out needs at least two tasks with known errors")
        sel = train_model2vec(X[train], F, errors[train], t0, config)
        out[i] = sel.scores(X[i], sel.expert_ids, F)[0]
    return out


def _as_matrix(xs: torch.Tensor | Sequence[Task2VecEmbedding]) -> torch.Tensor:
    if isinstance(xs, torch.Tensor):
        return xs.to(torch.float32)
    from .embedding import stack

    return stack(list(xs))


def compat_of(embedding: Task2VecEmbedding) -> dict[str, str]:
    return {f: embedding.metadata.get(f, "") for f in COMPAT_FIELDS}


def load_selector(spec: str | os.PathLike[str] | Model2Vec, hub: Any = None) -> Model2Vec:
    """A selector from a file path, or from a hub repo holding ``selector.safetensors``."""
    if isinstance(spec, Model2Vec):
        return spec
    p = Path(spec)
    if p.is_file():
        return Model2Vec.load(p)
    if hub is None or p.suffix == ".safetensors":
        raise SelectorError(f"selector {str(spec)!r} not found: pass a selector file or a hub repo id holding {SELECTOR_FILE}")
    from .hub.base import HubFileNotFoundError, validate_repo_id

    repo_id = validate_repo_id(str(spec))
    try:
        data = hub.download(repo_id, SELECTOR_FILE, None, max_bytes=512 * 1024 * 1024)
    except HubFileNotFoundError as exc:
        raise SelectorError(f"{repo_id} has no {SELECTOR_FILE}; upload one trained with `t2v-hub selector train`") from exc
    return Model2Vec.from_bytes(data, source=f"{repo_id}/{SELECTOR_FILE}")


__all__ = [
    "Model2Vec",
    "SelectorConfig",
    "load_selector",
    "loo_model2vec",
    "soft_labels",
    "sym_distances",
    "train_model2vec",
]
