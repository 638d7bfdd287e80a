"""The value every Fisher estimator returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class FisherResult:
    """Diagonal Fisher estimate.

    ``per_param`` maps a parameter name to a tensor shaped like the parameter: the
    mean over samples of the squared per-sample score (fp32). ``sums`` holds the
    un-normalised sums, so results of disjoint shards combine exactly
    (``merge``, or ``accelerator.reduce(..., "sum")`` of sums and counts).
    ``extras`` carries method-specific tensors (the variational precisions).
    """

    per_param: dict[str, torch.Tensor]
    num_samples: int
    method: str
    config: dict[str, Any] = field(default_factory=dict)
    sums: dict[str, torch.Tensor] | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def from_sums(
        cls, sums: dict[str, torch.Tensor], num_samples: int, method: str, config: dict[str, Any] | None = None
    ) -> FisherResult:
        n = max(int(num_samples), 1)
        per_param = {k: v / n for k, v in sums.items()}
        return cls(per_param=per_param, num_samples=int(num_samples), method=method, config=dict(config or {}), sums=sums)

    def merge(self, other: FisherResult) -> FisherResult:
        """Exact combination of two shards' results (sums add, counts add)."""
        if self.sums is None or other.sums is None:
            raise ValueError("merge needs results that carry sums (per-sample estimators)")
        if set(self.sums) != set(other.sums):
            raise ValueError("cannot merge Fisher results over different parameter sets")
        sums = {k: self.sums[k] + other.sums[k] for k in self.sums}
        return FisherResult.from_sums(sums, self.num_samples + other.num_samples, self.method, self.config)
