"""The one numba configuration the compiled kernels share (optional extra ``[fast]``).

``error_model="numpy"``: no zero-division check per element, which would stop LLVM
from vectorising the loops. fastmath only for reassociation/contraction (sums split
across SIMD lanes): no "nnan"/"ninf"/"arcp", since the approximate reciprocal flushes
the tiny guards the kernels add to denominators and turns 0/0 filters into NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def jit() -> Callable[[Callable[..., Any]], Any] | None:
    """numba's ``njit`` with the shared settings, or None when numba is not installed."""
    try:
        import numba
    except ImportError:
        return None
    return numba.njit(fastmath={"reassoc", "contract", "nsz"}, nogil=True, cache=True, error_model="numpy",
                      boundscheck=False)
