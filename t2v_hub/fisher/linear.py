"""Per-sample squared weight gradients of ``nn.Linear`` layers (no loop over samples).

For ``y = a W^T + b`` and a loss that is a sum of per-sample terms, the per-sample
weight gradient is ``G_i = sum_t g_{i,t}^T a_{i,t}``: ``t`` runs over tokens (ViT
qkv/proj/MLP see ``(B, T, in)``; extra middle dims are flattened into ``T``) or is
absent for 2-D inputs, and ``g = dL/dy`` is the output gradient captured in backward.

``contract_sq_sum`` is shared with the unfold convolution backend (a convolution is
a Linear over patches, ``L`` output positions playing the role of tokens). It picks
between two exact formulas for ``sum_i G_i**2`` (elementwise square):

* per-sample: build ``G_i`` with a batched matmul, square, sum -- ``chunk`` samples
  at a time so that memory stays bounded. Costs ``B*O*I`` memory traffic.
* pairwise: ``G_i[o,c]**2 = sum_{l,l'} (g_il g_il')[o] (a_il a_il')[c]`` so the sum
  over samples is ONE matmul over the ``B * L(L+1)/2`` position pairs. It never
  materialises a per-sample gradient, which wins when ``L`` is small (late CNN stages
  at low resolution, short sequences) because per-sample gradients are then
  memory-bound. ``L = 1`` is the classic 2-D case: ``(g**2)^T (a**2)``.
"""

from __future__ import annotations

import torch

# Per-sample gradients of one chunk are kept under this many bytes by default. On CPUs a
# cache-sized chunk (about the L3) is 2-3x faster than a large one because square+sum then
# run from cache (resnet18 stage 3 at 64 px, one thread: ~22 ms vs ~58 ms per layer);
# accelerators get big chunks (fewer kernel launches), bounded to keep memory predictable.
DEFAULT_CHUNK_BYTES = 256 * 2**20
CPU_CHUNK_BYTES = 32 * 2**20
# Use the pairwise formula up to this many positions/tokens per sample (measured
# crossover on CPU lies between 4 and 16; its cost grows as L^2, the other as L).
DEFAULT_PAIRWISE_MAX = 8


def default_chunk_bytes(device: torch.device) -> int:
    return CPU_CHUNK_BYTES if device.type == "cpu" else DEFAULT_CHUNK_BYTES


def chunk_for(
    per_sample_elems: int, chunk_size: int | None, itemsize: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> int:
    """Samples per chunk: ``chunk_size`` if given, else as many as fit in ``chunk_bytes``."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    return max(1, chunk_bytes // max(1, per_sample_elems * itemsize))


def _pair_products(t: torch.Tensor, weighted: bool) -> torch.Tensor:
    """(b, G, C, L) -> (G, b*P, C) products t_l * t_l' over the P = L(L+1)/2 pairs l <= l'."""
    b, groups, c, length = t.shape
    i, j = torch.triu_indices(length, length, device=t.device)
    prod = t[..., i] * t[..., j]  # (b, G, C, P)
    if weighted:  # off-diagonal pairs stand for both (l, l') and (l', l)
        prod = prod * torch.where(i == j, 1.0, 2.0).to(t.dtype)
    return prod.permute(1, 0, 3, 2).reshape(groups, b * i.numel(), c)


def contract_sq_sum(
    g: torch.Tensor,
    a: torch.Tensor,
    chunk_size: int | None = None,
    pairwise_max: int = DEFAULT_PAIRWISE_MAX,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """``sum_b (g_b a_b^T)**2`` per group: g ``(b, G, O, L)``, a ``(b, G, I, L)`` -> ``(G, O, I)``.

    Both inputs must already be in the accumulation dtype (fp32, or fp64 for fp64 models).
    """
    b, groups, n_out, length = g.shape
    n_in = a.shape[2]
    itemsize = g.element_size()
    out = torch.zeros(groups, n_out, n_in, dtype=g.dtype, device=g.device)
    if length <= pairwise_max:
        pairs = length * (length + 1) // 2
        step = chunk_for(pairs * groups * (n_out + n_in), chunk_size, itemsize, chunk_bytes)
        for s in range(0, b, step):
            out += torch.bmm(
                _pair_products(g[s : s + step], True).transpose(1, 2), _pair_products(a[s : s + step], False)
            )
        # A sum of squares written as sum_pq (g_p g_q)(a_p a_q): where the true value is ~0 the
        # rounding of the cross terms can leave it slightly negative (seen on visformer). Clamp.
        return out.clamp_min_(0.0)
    step = chunk_for(groups * n_out * n_in, chunk_size, itemsize, chunk_bytes)
    for s in range(0, b, step):
        gc, ac = g[s : s + step], a[s : s + step]
        n = gc.shape[0] * groups
        grads = torch.bmm(gc.reshape(n, n_out, length), ac.reshape(n, n_in, length).transpose(1, 2))
        out += grads.square_().reshape(-1, groups, n_out, n_in).sum(dim=0)
    return out


def linear_sq_sum(
    a: torch.Tensor,
    g: torch.Tensor,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    pairwise_max: int = DEFAULT_PAIRWISE_MAX,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> torch.Tensor:
    """``sum_i G_i**2`` shaped like the weight ``(out, in)``, computed in ``dtype``."""
    a = a.to(dtype)
    g = g.to(dtype)
    if a.dim() == 2:
        # Rank-one per-sample gradients: the sum of squares is a single matmul of squares.
        return (g * g).t() @ (a * a)
    a3 = a.reshape(a.shape[0], -1, a.shape[-1])  # (B, T, in)
    g3 = g.reshape(g.shape[0], -1, g.shape[-1])  # (B, T, out)
    # (B, 1, C, T) views: no copy here, bmm copies per chunk if it needs to.
    return contract_sq_sum(
        g3.transpose(1, 2).unsqueeze(1),
        a3.transpose(1, 2).unsqueeze(1),
        chunk_size,
        pairwise_max,
        chunk_bytes,
    ).squeeze(0)


def linear_persample(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Per-sample weight gradients ``(b, out, in)`` (used when a layer is called several times)."""
    a3 = a.reshape(a.shape[0], -1, a.shape[-1])
    g3 = g.reshape(g.shape[0], -1, g.shape[-1])
    return torch.bmm(g3.transpose(1, 2), a3)
