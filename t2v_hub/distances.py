"""Public alias of :mod:`t2v_hub.selection.distances` (``t2v_hub.distances.d_sym`` keeps working)."""

from .selection.distances import cdist, cdist_asym, d_asym, d_sym, pdist

__all__ = ["cdist", "cdist_asym", "d_asym", "d_sym", "pdist"]
