"""Fast one-target ranking: d_sym from every row of an expert matrix to one target.

:func:`t2v_hub.distances.cdist` is general (many x many) and materialises ``u`` and
``v`` for every pair. Ranking asks for one target against n experts, which allows
fewer passes over the (n, dim) matrix. With ``s = a + b`` and ``r = b / s`` (zero
where ``s == 0``), on the filters where ``s > 0``::

    u = a / s = 1 - r,   v = r
    u.v = sum(r) - sum(r^2)
    v.v = sum(r^2)
    u.u = N_pos - 2 sum(r) + sum(r^2)      (N_pos = #filters with s > 0)

so one elementwise division and two reductions per element replace the two
divisions, three products and three reductions of the direct form. The float32
sums (torch sums cascade-wise, error ~1e-7 of the sum) are exact enough unless
``u.u`` or ``u.v`` is a small difference of large sums, which happens when an
expert is much smaller than the target (r close to 1 on most filters). Rows where
``u.u`` is below ``_ILL_CONDITIONED`` of ``N_pos`` are therefore recomputed with
the direct formula, so results agree with ``cdist`` to about 1e-6 whatever the
scales. (float64 accumulators would avoid the fallback but cost more than the
division itself on this CPU.)

Parallelism: row blocks go to a small thread pool while torch's own intra-op
threads are set to 1 for the call (and restored). Each chunk op is too short for
OpenMP's fork/join to pay off: on a shared 2-core machine, two OpenMP threads
ran 10-80x *slower* than one (the partner thread is often descheduled at a
barrier), while two Python threads of single-threaded ops (torch releases the GIL)
scale normally. Rows are independent, so the result is bitwise the same.

Backends: with numba installed (``pip install t2v-hub[fast]``) the add, division
and both sums run as one compiled loop per row (vectorised, no temporaries): about
0.3 ns per element against 0.6-0.8 for the chunked torch ops, measured in
benchmarks/rank_scale.py. ``T2V_HUB_RANK_BACKEND=torch|numba`` forces one (default
``auto``: numba when importable and the matrix has at least :data:`AUTO_NUMBA_MIN_ELEMENTS`
entries: importing numba and loading its cached kernels costs ~0.9 s once per process on a
2-core CPU, which the 0.4 ns per element it saves pays back only on hub-scale matrices). Both
give the same distances to ~1e-6.

The matrix may be stored in bfloat16 to halve memory (same exponent range as
float32, so the many orders of magnitude a Fisher spans survive; float16 would
underflow). Each chunk is upcast to float32 before any arithmetic.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from ..distances import sym_block

# Rows per chunk are chosen so a chunk holds about this many elements (float32:
# 1 MiB), small enough to stay in L2 while the handful of passes run over it.
_CHUNK_ELEMENTS = 1 << 18
# Relative size of u.u under which the cancellation-free direct formula is used.
_ILL_CONDITIONED = 1e-2
# Added to the denominator so 0/0 (filter dead in both) gives 0 without a mask pass;
# it is far below any Fisher value that matters (float32 smallest normal ~1.2e-38).
_TINY = 1e-38


BACKENDS = ("auto", "torch", "numba")


@functools.cache
def _numba_kernels() -> tuple[Callable, Callable] | None:
    """The compiled row-sum loops (float32 and bfloat16-as-uint16 rows), or None without numba."""
    from ._numba import jit as numba_jit

    jit = numba_jit()
    if jit is None:
        return None
    import numpy as np

    tiny = np.float32(np.finfo(np.float32).tiny)  # smallest *normal* float32: never flushed

    @jit
    def sums_f32(m, b, out_r, out_r2):  # pragma: no cover - compiled
        for i in range(m.shape[0]):
            sr = np.float32(0.0)
            sr2 = np.float32(0.0)
            for k in range(m.shape[1]):
                r = b[k] / (m[i, k] + b[k] + tiny)
                sr += r
                sr2 += r * r
            out_r[i] = sr
            out_r2[i] = sr2

    @jit
    def sums_bf16(m16, b, out_r, out_r2):  # pragma: no cover - compiled
        # bfloat16 is the top half of a float32: widen the bits, then read them as float32.
        buf = np.empty(m16.shape[1], dtype=np.uint32)
        row = buf.view(np.float32)
        for i in range(m16.shape[0]):
            for k in range(m16.shape[1]):
                buf[k] = np.uint32(m16[i, k]) << 16
            sr = np.float32(0.0)
            sr2 = np.float32(0.0)
            for k in range(m16.shape[1]):
                r = b[k] / (row[k] + b[k] + tiny)
                sr += r
                sr2 += r * r
            out_r[i] = sr
            out_r2[i] = sr2

    return sums_f32, sums_bf16


# ``auto`` takes numba from this many matrix entries on (2^28: ~13k experts of lite0's 20k filters).
AUTO_NUMBA_MIN_ELEMENTS = 1 << 28


def backend(name: str | None = None, elements: int | None = None) -> str:
    """The backend a call will use: ``name``, else ``T2V_HUB_RANK_BACKEND``, else auto.

    ``elements``: the size of the matrix about to be ranked; below
    :data:`AUTO_NUMBA_MIN_ELEMENTS`, ``auto`` is torch (numba's start-up would cost more than it saves).
    """
    env = os.environ.get("T2V_HUB_RANK_BACKEND", "").strip()
    choice = (name or env or "auto").lower()
    if choice not in BACKENDS:
        if name:
            raise ValueError(f"ranking backend must be one of {', '.join(BACKENDS)}, got {choice!r}")
        from ...errors import ConfigError

        raise ConfigError(f"T2V_HUB_RANK_BACKEND={env!r} is not a ranking backend; set it to one of "
                          f"{', '.join(BACKENDS)} or unset it")
    if choice == "auto":
        if elements is not None and elements < AUTO_NUMBA_MIN_ELEMENTS:
            return "torch"
        return "numba" if _numba_kernels() is not None else "torch"
    if choice == "numba" and _numba_kernels() is None:
        raise ValueError("ranking backend 'numba' needs numba: pip install 't2v-hub[fast]'")
    return choice


def _as_target(target: torch.Tensor, dim: int) -> torch.Tensor:
    b = torch.as_tensor(target, dtype=torch.float32).reshape(-1)
    if b.numel() != dim:
        raise ValueError(f"target has {b.numel()} entries but the expert matrix has {dim} columns")
    return b.contiguous()


def sym_to_target(
    matrix: torch.Tensor,
    target: torch.Tensor,
    *,
    chunk_elements: int = _CHUNK_ELEMENTS,
    threads: int | None = None,
    backend_name: str | None = None,
) -> torch.Tensor:
    """d_sym(row_i, target) for every row of ``matrix`` (n, dim); float32 (n,).

    Matches ``cdist(matrix, target[None])[:, 0]`` (same dead-filter conventions)
    without any (n, dim) temporary: memory beyond the matrix is one chunk per
    thread. ``threads`` defaults to ``torch.get_num_threads()``; ``backend_name`` see
    :func:`backend`.
    """
    if matrix.dim() != 2:
        raise ValueError(f"expert matrix must be 2-D, got shape {tuple(matrix.shape)}")
    n, d = matrix.shape
    b = _as_target(target, d)
    use_numba = backend(backend_name, elements=n * d) == "numba"
    out = torch.empty(n, dtype=torch.float32)
    if n == 0:
        return out
    rows = max(1, min(n, chunk_elements // max(d, 1)))
    before = torch.get_num_threads()
    k = max(1, min(threads or before, n // rows))
    bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
    if before > 1:
        torch.set_num_threads(1)
    try:
        if k == 1:
            _rows_to_target(matrix, b, out, rows, use_numba)
        else:
            with ThreadPoolExecutor(k, thread_name_prefix="t2v-rank") as pool:
                list(pool.map(
                    lambda r: _rows_to_target(matrix[r[0] : r[1]], b, out[r[0] : r[1]], rows, use_numba), bounds
                ))
    finally:
        if before > 1:
            torch.set_num_threads(before)
    return out


def _rows_to_target(matrix: torch.Tensor, b: torch.Tensor, out: torch.Tensor, rows: int, use_numba: bool) -> None:
    """The kernel on one block of rows, single-threaded, writing into ``out``."""
    n, d = matrix.shape
    zero_cols = (b == 0).nonzero().flatten()
    n_pos_b = float(d - zero_cols.numel())
    sum_r = torch.empty(n, dtype=torch.float32)
    sum_r2 = torch.empty(n, dtype=torch.float32)
    if use_numba:
        kernels = _numba_kernels()
        assert kernels is not None
        if matrix.dtype == torch.float32:
            kernels[0](matrix.numpy(), b.numpy(), sum_r.numpy(), sum_r2.numpy())
        else:
            kernels[1](matrix.view(torch.int16).numpy().view("uint16"), b.numpy(), sum_r.numpy(), sum_r2.numpy())
    else:
        _torch_sums(matrix, b, sum_r, sum_r2, rows)
    _finish(matrix, b, out, sum_r, sum_r2, zero_cols, n_pos_b, rows)


def _torch_sums(matrix: torch.Tensor, b: torch.Tensor, sum_r: torch.Tensor, sum_r2: torch.Tensor, rows: int) -> None:
    n, d = matrix.shape
    b_den = b + _TINY
    buf = torch.empty(min(rows, n), d, dtype=torch.float32)
    half = matrix.dtype != torch.float32
    for i in range(0, n, rows):
        j = min(n, i + rows)
        chunk = buf[: j - i]
        # s = a + b, then r = b / s in place. A bfloat16 chunk is upcast by a plain copy
        # first: measured faster than letting the add promote types element by element.
        if half:
            chunk.copy_(matrix[i:j]).add_(b_den)
        else:
            torch.add(matrix[i:j], b_den, out=chunk)
        torch.div(b, chunk, out=chunk)
        torch.sum(chunk, dim=1, out=sum_r[i:j])
        chunk.mul_(chunk)
        torch.sum(chunk, dim=1, out=sum_r2[i:j])


def _finish(matrix: torch.Tensor, b: torch.Tensor, out: torch.Tensor, sum_r: torch.Tensor, sum_r2: torch.Tensor,
            zero_cols: torch.Tensor, n_pos_b: float, rows: int) -> None:
    n = matrix.shape[0]
    # Filters where the target is zero: r = 0 there, but u = 1 wherever the expert is
    # non-zero, so they count in N_pos. Usually none; one gather over those columns.
    if zero_cols.numel():
        n_pos = n_pos_b + (matrix[:, zero_cols] != 0).sum(1, dtype=torch.float32)
    else:
        n_pos = torch.full((n,), n_pos_b, dtype=torch.float32)
    uv = sum_r - sum_r2
    vv = sum_r2
    uu = (n_pos - 2.0 * sum_r + sum_r2).clamp_min(0.0)
    cos = uv / (uu.sqrt() * vv.sqrt()).clamp_min(1e-30)
    out.copy_((1.0 - cos).clamp(0.0, 2.0))
    bad = (uu < _ILL_CONDITIONED * n_pos.clamp_min(1.0)).nonzero().flatten()
    if bad.numel():
        for k in range(0, bad.numel(), rows):
            idx = bad[k : k + rows]
            out[idx] = sym_block(matrix[idx].to(torch.float32), b[None])[:, 0]


class ExpertMatrix:
    """Expert embeddings in one (n, dim) matrix, with their distance to the trivial task.

    ``to_trivial`` does not depend on the target, so it is computed once here; ranking a
    target is then one pass of :func:`sym_to_target`. ``dtype=torch.bfloat16`` halves
    memory at a relative rounding of 2^-9 per entry (see benchmarks/rank_scale.py for
    the measured effect on distances and rankings).
    """

    def __init__(
        self,
        matrix: torch.Tensor,
        trivial: torch.Tensor | None = None,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if dtype not in (torch.float32, torch.bfloat16):
            raise ValueError("expert matrix dtype must be float32 or bfloat16 (float16 underflows Fisher values)")
        self.matrix = matrix if matrix.dtype == dtype and matrix.is_contiguous() else matrix.to(dtype).contiguous()
        self.to_trivial = (
            sym_to_target(self.matrix, trivial) if trivial is not None else torch.zeros(self.matrix.shape[0])
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    def d_sym(self, target: torch.Tensor) -> torch.Tensor:
        return sym_to_target(self.matrix, target)

    def d_asym(self, target: torch.Tensor, alpha: float) -> torch.Tensor:
        """d_asym(expert_i -> target) = d_sym(expert_i, target) - alpha * d_sym(expert_i, t0)."""
        return self.d_sym(target) - alpha * self.to_trivial


__all__ = ["BACKENDS", "ExpertMatrix", "backend", "sym_to_target"]
