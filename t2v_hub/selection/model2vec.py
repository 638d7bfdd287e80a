"""MODEL2VEC selectors (supplement 4.3): the artifact, applying it, loading it (training: ``training.py``).

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

- ``filter_weights`` (dim,), ``bias="layer"``: one weight per probe layer inside the
  cosine of d_sym, shared by every expert (``layer_weights.py``); no per-expert
  parameter at all.

``SelectorConfig.bias`` picks ``"layer"`` (default), ``"filter"`` (the supplement's vector
bias only), ``"both"``, ``"scalar"`` or ``"none"`` (only gamma). The per-expert offset fits
the training domains: under leave-one-domain-out it made MODEL2VEC worse than d_asym, and the
per-filter bias changed no choice there; only ``"layer"`` beat d_asym
(benchmarks/selection_quality.py).

Direction: the supplement writes ``d_asym(t_i, m_j)``; we use the main text's
convention, the expert as the source: ``d_asym(m_j -> t_i) = d_sym(m_j, t_i) -
alpha * d_sym(m_j, t0)``, so the trivial-task term is the expert's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from .. import constants as C
from ..config import check_count, check_path, check_real
from ..embedding import COMPAT_FIELDS, Task2VecEmbedding, atomic_write_bytes
from ..errors import SelectorError

SELECTOR_FORMAT = "t2v-hub-selector"
SELECTOR_FILE = "selector.safetensors"
BIAS_KINDS = C.M2V_BIAS_KINDS
# (tasks x experts x dim) elements per differentiable distance chunk: bounds memory.

@dataclass(frozen=True)
class SelectorConfig:
    """Training settings of MODEL2VEC; defaults from supplement 4.3. Recorded in the artifact."""

    alpha: float = C.ASYM_ALPHA  # weight of the trivial-task term in d_asym
    alpha_soft: float = C.M2V_ALPHA_SOFT  # sharpness of the soft labels
    lr: float = C.M2V_LR
    weight_decay: float = C.M2V_WEIGHT_DECAY
    epochs: int = C.M2V_EPOCHS
    batch_size: int = 0  # tasks per Adam step; 0 = all tasks (one step per epoch)
    # "layer" (one weight per probe layer, shared by all experts): under leave-one-domain-out the only
    # variant below d_asym, on two ground-truth replicates of the zoo; "filter" (the supplement's) equals
    # d_asym there and "both" memorises domains (BENCHMARKS.md, "Selection quality").
    bias: str = C.M2V_BIAS
    seed: int = 0  # order of tasks when batch_size > 0
    layer_epochs: int = C.M2V_LAYER_EPOCHS  # bias="layer" only (see layer_weights.py)
    layer_decay: float = C.M2V_LAYER_DECAY
    # "cv": add beta * (generalist score) to each expert's offset, beta chosen on held-out clusters of the
    # training tasks (selection/prior_offset.py); "none": the supplement's selector.
    prior: str = C.M2V_PRIOR
    prior_folds: int = C.M2V_PRIOR_FOLDS

    def __post_init__(self) -> None:
        if self.bias not in BIAS_KINDS:
            raise SelectorError(f"bias must be one of {', '.join(BIAS_KINDS)}, got {self.bias!r}")
        if self.prior not in C.M2V_PRIOR_KINDS:
            raise SelectorError(f"prior must be one of {', '.join(C.M2V_PRIOR_KINDS)}, got {self.prior!r}")
        # Each named: alpha=2, lr=inf or epochs=1.5 would train (or crash) far from where it was set.
        check_real("alpha", self.alpha, 0.0, 1.0, error=SelectorError)
        for name in ("lr", "alpha_soft"):
            check_real(name, getattr(self, name), 0.0, lo_open=True, error=SelectorError)
        for name in ("weight_decay", "layer_decay"):
            check_real(name, getattr(self, name), 0.0, error=SelectorError)
        # Zero epochs trains nothing: the selector would record a loss it never computed.
        for name, lo in (("epochs", 1), ("batch_size", 0), ("seed", 0), ("layer_epochs", 1), ("prior_folds", 2)):
            check_count(name, getattr(self, name), lo, error=SelectorError)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SelectorConfig:
        known = {f.name for f in fields(cls)}
        # A selector saved before the prior existed has none in its offsets: say so, not today's default.
        return cls(**{"prior": "none", **{k: v for k, v in data.items() if k in known}})

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
    # bias="layer": the learned weight of every filter's layer in the cosine (dim,), shared by all experts.
    filter_weights: torch.Tensor | None = None
    # Each expert's mean relative error increase over its training tasks (E,), lower = better, NaN where
    # too few tasks back it: the generalist slot of a two-stage shortlist (generalist.py). None in
    # selectors written before it existed.
    generalist: torch.Tensor | None = None

    @property
    def gamma(self) -> float:
        return float(torch.tensor(self.log_gamma).exp())

    @property
    def alpha(self) -> float:
        return self.config.alpha

    def generalist_ids(self) -> list[str]:
        """The experts with a generalist score, best first (empty for a selector without one)."""
        if self.generalist is None:
            return []
        from .generalist import generalist_order

        return [self.expert_ids[j] for j in generalist_order(self.generalist)]

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
        # A layer selector has no per-expert bias to miss, unless its offsets carry the static prior.
        if unseen and (self.filter_weights is None or bool(self.offset.ne(0).any())):
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
            return self.distances(m, targets.reshape(-1, m.shape[-1]), self.alpha) + offset

    def distances(self, m: torch.Tensor, targets: torch.Tensor, alpha: float, trivial: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """d_asym(m_j -> t_i) (T, E) of biased experts ``m`` (from :meth:`apply`), in this selector's metric."""
        t0 = self.trivial if trivial is None else trivial
        if self.filter_weights is None:
            from .training import asym_distances

            return asym_distances(m, targets, t0, alpha)
        from .distances import cdist_asym

        return cdist_asym(m, targets, t0, alpha, weights=self.filter_weights).T

    # -- artifact -----------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.torch import save as st_save

        from ..version import __version__

        tensors = {"offset": self.offset.contiguous(), "log_gamma": torch.tensor([self.log_gamma]),
                   "trivial": self.trivial.contiguous()}
        if self.log_scale is not None:
            tensors["log_scale"] = self.log_scale.contiguous()
        if self.filter_weights is not None:
            tensors["filter_weights"] = self.filter_weights.contiguous()
        if self.generalist is not None:
            tensors["generalist"] = self.generalist.to(torch.float32).contiguous()
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
            raw = json.loads(meta["config"])
            if "bias" not in raw:  # written before `bias` existed: say what the file holds, not today's default
                raw["bias"] = "layer" if "filter_weights" in tensors else ("both" if "log_scale" in tensors else "scalar")
            config = SelectorConfig.from_dict(raw)
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
                filter_weights=tensors.get("filter_weights"),
                generalist=tensors.get("generalist"),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise SelectorError(f"{source}: malformed selector file ({exc})") from exc
        if (out.offset.numel() != len(ids) or (out.log_scale is not None and out.log_scale.shape[0] != len(ids))
                or (out.generalist is not None and out.generalist.numel() != len(ids))):
            raise SelectorError(f"{source}: tensor sizes do not match its {len(ids)} expert ids")
        fw = out.filter_weights
        if fw is not None and (fw.numel() != out.trivial.numel() or not bool((fw > 0).all())):
            raise SelectorError(f"{source}: filter_weights must be {out.trivial.numel()} positive numbers")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Model2Vec:
        check_path("path", path, expected="the path of a selector file (`t2v-hub selector train`)", optional=False,
                   error=SelectorError)
        p = Path(path)
        if not p.is_file():
            raise SelectorError(f"selector file {str(p)!r} not found; train one with `t2v-hub selector train`")
        return cls.from_bytes(p.read_bytes(), source=str(p))


def _as_matrix(xs: torch.Tensor | Sequence[Task2VecEmbedding]) -> torch.Tensor:
    if isinstance(xs, torch.Tensor):
        return xs.to(torch.float32)
    from ..embedding import stack

    return stack(list(xs))


def compat_of(embedding: Task2VecEmbedding) -> dict[str, str]:
    return {f: embedding.metadata.get(f, "") for f in COMPAT_FIELDS}


def load_selector(spec: str | os.PathLike[str] | Model2Vec, hub: Any = None) -> Model2Vec:
    """A selector from a file path, or from a hub repo holding ``selector.safetensors``."""
    if isinstance(spec, Model2Vec):
        return spec
    if not isinstance(spec, (str, os.PathLike)) or not str(spec).strip():
        raise SelectorError(f"selector={spec!r}: expected a selector file, a hub repo id or a Model2Vec")
    p = Path(spec)
    if p.is_file():
        return Model2Vec.load(p)
    if hub is None or p.suffix == ".safetensors":
        raise SelectorError(f"selector {str(spec)!r} not found: pass a selector file or a hub repo id holding {SELECTOR_FILE}")
    from ..hub.base import HubFileNotFoundError, validate_repo_id

    repo_id = validate_repo_id(str(spec))
    try:
        data = hub.download(repo_id, SELECTOR_FILE, None, max_bytes=512 * 1024 * 1024)
    except HubFileNotFoundError as exc:
        raise SelectorError(f"{repo_id} has no {SELECTOR_FILE}; upload one trained with `t2v-hub selector train`") from exc
    return Model2Vec.from_bytes(data, source=f"{repo_id}/{SELECTOR_FILE}")


__all__ = [
    "Model2Vec",
    "SelectorConfig",
    "compat_of",
    "load_selector",
    "vector_digest",
]
