"""Data-parallel embedding through Accelerate.

Under ``accelerate launch`` every process loads the same seeded selection of
samples, embeds the features of a disjoint shard, and the shards are gathered so
that all processes fit the *same* head (same features in the same order, same
seed). The Fisher pass then runs on the shards and the per-parameter **sums** and
sample counts are reduced with a sum, which is exact for the per-sample
estimators: the result equals a single process on the same samples up to float
summation order. Only the main process writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .fisher.result import FisherResult


@dataclass(frozen=True)
class DistInfo:
    world_size: int
    rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """World size and rank; initialises Accelerate's process group only when launched by it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(1, 0)
    from accelerate import PartialState

    # Without CUDA, Accelerate only forms a process group when told to use the CPU
    # (gloo); on GPU machines it picks NCCL itself.
    state = PartialState(cpu=not torch.cuda.is_available())
    return DistInfo(state.num_processes, state.process_index)


def shard_indices(n: int, info: DistInfo) -> torch.Tensor:
    """Contiguous, disjoint shards (contiguous keeps gather order = original order)."""
    bounds = [n * r // info.world_size for r in range(info.world_size + 1)]
    return torch.arange(bounds[info.rank], bounds[info.rank + 1])


def gather_rows(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every process's rows in rank order."""
    if not info.enabled:
        return t
    from accelerate.utils import gather_object

    parts = gather_object([t.cpu()])
    return torch.cat(parts)


def reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return t
    from accelerate.utils import reduce

    return reduce(t.contiguous(), reduction="sum")


def reduce_result(result: FisherResult, info: DistInfo) -> FisherResult:
    """Sum every process's per-parameter Fisher sums and sample counts (exact for per-sample estimators)."""
    if not info.enabled:
        return result
    from .fisher.result import FisherResult

    if result.sums is None:
        raise ValueError(f"the {result.method} estimator keeps no sums; it cannot be reduced across processes")
    sums = {k: reduce_sum(v, info) for k, v in result.sums.items()}
    count = int(reduce_sum(torch.tensor([float(result.num_samples)]), info).item())
    return FisherResult.from_sums(sums, count, result.method, {**result.config, "world_size": info.world_size})
