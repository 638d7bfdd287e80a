"""Public alias of :mod:`t2v_hub.selection.transferability` (``t2v_hub.transferability.logme``)."""

from .selection.transferability import SCORES, hscore, knn_loo, logme, score_features

__all__ = ["SCORES", "hscore", "knn_loo", "logme", "score_features"]
