"""What the steps of one embedding share: the probe, the config, the task's rows and where to run.

Pipeline floor, beside :mod:`t2v_hub.task2vec` (which makes one) and :mod:`t2v_hub.dense`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import EmbedConfig
from .data.rows import ImageRows
from .data.tensors import TensorBatches
from .distributed import DistInfo
from .fisher.common import autocast_ctx
from .fisher.result import FisherResult
from .probes import Probe
from .probes.memory_format import prefer_channels_last

LIKELIHOOD = {"single": "categorical", "multi": "bernoulli", "regression": "gaussian"}


def batched_outputs(fn: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor | ImageRows, batch_size: int,
                    device: torch.device, desc: str | None = None,
                    autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``fn`` over ``images`` batch by batch, without gradients; fp32 results on the CPU.

    ``autocast_dtype``: the Fisher pass's autocast, so the features the head is fitted on come from
    the same forward numerics as the pass that measures it (and a forward-only pass gains the most).
    """
    out = []
    with torch.no_grad(), autocast_ctx(device, autocast_dtype):
        for x, _ in TensorBatches(images, torch.zeros(images.shape[0]), batch_size, desc):
            out.append(fn(x.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out)


@dataclass
class EmbedRun:
    """What the steps of one embedding share."""

    probe: Probe
    config: EmbedConfig
    label_kind: str
    images: ImageRows  # normalised batch by batch: the task is never one float tensor
    labels: torch.Tensor
    shard: torch.Tensor
    dist: DistInfo
    device: torch.device
    autocast_dtype: torch.dtype | None
    quiet: bool
    memory_format: str = field(init=False)

    def __post_init__(self) -> None:
        # The probe's layout for the passes: channels-last on the CPU where the model allows it.
        self.memory_format = prefer_channels_last(self.probe.model, self.images[:1].to(self.device))

    def batches(self, labels: torch.Tensor, desc: str) -> TensorBatches:
        return TensorBatches(self.images.select(self.shard), labels[self.shard], self.config.fisher.batch_size,
                             None if self.quiet else desc)

    def montecarlo(self, logits: torch.Tensor, generator: torch.Generator, options: dict[str, Any]) -> FisherResult:
        from .fisher import estimate_montecarlo_presampled

        return estimate_montecarlo_presampled(
            self.probe.model, self.images, logits, params=self.probe.measured_params(),
            mc_samples=self.config.fisher.mc_samples, generator=generator,
            likelihood=LIKELIHOOD[self.label_kind], shard=self.shard, batch_size=self.config.fisher.batch_size,
            autocast_dtype=self.autocast_dtype, device=self.device, progress=not self.quiet,
            **{k: v for k, v in options.items() if k != "likelihood"},
        )
