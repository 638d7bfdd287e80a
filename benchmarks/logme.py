"""LogME for the benchmarks: the library's implementation (:mod:`t2v_hub.selection.transferability`)
on numpy arrays, iterated to a 1e-6 relative change (the library's default is the paper's 1e-3)."""

from __future__ import annotations

import numpy as np
import torch

from t2v_hub.selection.transferability import logme as _logme
from t2v_hub.selection.transferability import logme_columns


def logme(features: np.ndarray, labels: np.ndarray, *, max_iter: int = 100, tol: float = 1e-6) -> float:
    """LogME score of (features, integer labels): mean over classes of evidence / N. Higher = better."""
    f = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(np.asarray(labels).astype(np.int64).reshape(-1))
    if tol == 1e-3 and max_iter == 100:
        return _logme(f, y)
    cols = logme_columns(f, y, max_iter=max_iter, tol=tol)
    return float(np.mean([c.evidence for c in cols]))


__all__ = ["logme"]
