"""Frozen configuration dataclasses; each is recorded into every embedding's metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from . import constants as C


@dataclass(frozen=True)
class HeadConfig:
    """Head fitting on cached features (supplement 4.1/4.2).

    The supplement gives Adam and 2 epochs for the head before the Fisher pass, with
    epochs of ``draws_per_epoch`` class-balanced draws with replacement. It does not
    give the head-only learning rate: we use Adam's customary 1e-3 (1e-4, the
    joint-phase rate, barely moves a zero-initialised head in 2 short epochs).
    """

    epochs: int = C.HEAD_EPOCHS
    lr: float = 1e-3
    weight_decay: float = C.HEAD_WEIGHT_DECAY
    draws_per_epoch: int = C.HEAD_DRAWS_PER_EPOCH
    batch_size: int = 64
    balanced: bool = True


@dataclass(frozen=True)
class FisherConfig:
    method: str = C.DEFAULT_FISHER_METHOD
    mc_samples: int = 1
    batch_size: int = C.DEFAULT_BATCH_SIZE
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbedConfig:
    probe: str = C.DEFAULT_PROBE
    max_samples: int | None = None
    seed: int = 0
    include_norm: bool = False
    input_size: int | None = None
    head: HeadConfig = field(default_factory=HeadConfig)
    fisher: FisherConfig = field(default_factory=FisherConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
