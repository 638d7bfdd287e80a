"""Per-sample squared weight gradients of ``nn.Linear`` layers (no loop over samples).

For ``y = a W^T + b`` the per-sample gradient of a loss that is a sum of per-sample
terms is ``G_i = sum_t g_{i,t}^T a_{i,t}`` (``t`` runs over tokens, or is absent for
2-D inputs), where ``g = dL/dy`` is the output gradient captured during backward.

* 2-D inputs ``(B, in)``: ``G_i = g_i a_i^T`` is rank one, so
  ``sum_i G_i**2 = (g**2)^T (a**2)`` -- one matmul of squares, exact, no per-sample
  tensor is ever materialised.
* Sequence inputs ``(B, T, in)`` (ViT qkv/proj/MLP, any extra middle dims are
  flattened into ``T``): ``G_i`` is no longer rank one, so it is built with a batched
  matmul, squared and summed, ``chunk`` samples at a time to bound memory.
"""

from __future__ import annotations

import torch

# Per-sample gradients of one chunk are kept under this many bytes by default.
DEFAULT_CHUNK_BYTES = 256 * 2**20


def _as_sequence(t: torch.Tensor) -> torch.Tensor:
    """(B, in) -> (B, 1, in); (B, d1, ..., in) -> (B, T, in)."""
    if t.dim() == 2:
        return t.unsqueeze(1)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def linear_chunk_size(weight_numel: int, chunk_size: int | None, itemsize: int = 4) -> int:
    """Samples per chunk so that a chunk of per-sample gradients stays under the budget."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, DEFAULT_CHUNK_BYTES // max(1, weight_numel * itemsize))


def linear_persample(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients ``(b, out, in)`` of a chunk (inputs already in the compute dtype)."""
    return torch.bmm(_as_sequence(g).transpose(1, 2), _as_sequence(a))


def linear_sq_sum(
    a: torch.Tensor, g: torch.Tensor, chunk_size: int | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``sum_i G_i**2`` shaped like the weight ``(out, in)``, computed in ``dtype``."""
    a = a.to(dtype)
    g = g.to(dtype)
    seq_len = 1 if a.dim() == 2 else a.numel() // (a.shape[0] * a.shape[-1])
    if seq_len == 1:
        # Rank-one per-sample gradients: the sum of squares is a single matmul of squares.
        a2 = a.reshape(a.shape[0], -1)
        g2 = g.reshape(g.shape[0], -1)
        return (g2 * g2).t() @ (a2 * a2)
    a3, g3 = _as_sequence(a), _as_sequence(g)
    out = torch.zeros(g3.shape[-1], a3.shape[-1], dtype=dtype, device=a.device)
    step = linear_chunk_size(out.numel(), chunk_size, torch.finfo(dtype).bits // 8)
    for start in range(0, a3.shape[0], step):
        grads = torch.bmm(g3[start : start + step].transpose(1, 2), a3[start : start + step])
        out += grads.square_().sum(dim=0)
    return out
