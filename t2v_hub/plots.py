"""Pictures of a set of tasks: a clustered distance heatmap and a 2-D map.

Matplotlib with the Agg backend (no display needed). Both figures stay legible
from a handful of tasks to a hundred or more: the figure grows with the number
of tasks up to a cap, the font shrinks with it down to a floor, and when labels
would still overlap only every k-th one is written.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

# Above this many tick labels per axis, only every k-th is written.
_MAX_LABELS = 60


def _plt():  # noqa: ANN202 - matplotlib.pyplot module
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _font_size(n: int) -> float:
    # ~9 pt for a few tasks, shrinking to 5 pt at ~100 labels shown.
    return float(max(5.0, min(9.0, 9.0 - 4.0 * (min(n, _MAX_LABELS) - 10) / 50)))


def _linkage(D: np.ndarray) -> np.ndarray:
    """Average-linkage tree of a distance matrix (symmetrised; shifted if negative), leaves
    optimally ordered so that neighbouring rows of the heatmap are similar."""
    from scipy.cluster.hierarchy import linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    S = 0.5 * (D + D.T)
    S = S - S.min() if S.min() < 0 else S  # d_asym can be negative: a shift keeps the tree
    np.fill_diagonal(S, 0.0)
    y = squareform(S, checks=False)
    return optimal_leaf_ordering(linkage(y, method="average"), y)


def cluster_order(D: np.ndarray) -> np.ndarray:
    """Row order of the clustered heatmap."""
    from scipy.cluster.hierarchy import leaves_list

    n = D.shape[0]
    return np.arange(n) if n < 3 else leaves_list(_linkage(np.asarray(D, dtype=np.float64)))


def _short(label: str, limit: int = 40) -> str:
    # Long ids (org/dataset/config/split) would eat the figure: keep both ends.
    return label if len(label) <= limit else label[: limit // 2 - 1] + "\u2026" + label[-(limit // 2 - 1) :]


def plot_distance_matrix(
    D: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    out: str | os.PathLike[str],
    *,
    title: str = "TASK2VEC distances",
    colorbar_label: str = "d_sym (cosine of normalised Fisher)",
    cluster: bool = True,
) -> Path:
    """Heatmap of ``D`` with rows/columns in hierarchical-clustering order, plus its dendrogram.

    Layout in inches (dendrogram | heatmap | row labels | colour bar) so that labels
    never overlap the tree or the bar, whatever their length.
    """
    plt = _plt()
    from scipy.cluster.hierarchy import dendrogram

    M = np.asarray(D, dtype=np.float64)
    n = M.shape[0]
    if M.shape != (n, n) or len(labels) != n:
        raise ValueError(f"need a square matrix and one label per row, got {M.shape} and {len(labels)} labels")
    order = cluster_order(M) if cluster else np.arange(n)
    M, names = M[np.ix_(order, order)], [_short(labels[i]) for i in order]
    show_tree = cluster and n >= 3
    fs = _font_size(n)
    step = max(1, math.ceil(n / _MAX_LABELS))
    ticks = np.arange(0, n, step)
    label_in = max(len(names[i]) for i in ticks) * fs * 0.62 / 72 + 0.15  # text width, inches
    heat = float(min(12.0, max(4.0, 0.3 * n)))
    tree, gap, cbar, cbar_text, pad = (1.4 if show_tree else 0.0), 0.05, 0.22, 0.9, 0.25
    W = pad + tree + gap + heat + label_in + 0.25 + cbar + cbar_text
    H = pad + heat + label_in + 0.7
    fig = plt.figure(figsize=(W, H))
    x0, y0 = pad + tree + gap, pad
    ax = fig.add_axes((x0 / W, y0 / H, heat / W, heat / H))
    im = ax.imshow(M, cmap="viridis_r", interpolation="nearest", aspect="auto")
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=90, fontsize=fs)
    ax.set_yticks(ticks, [names[i] for i in ticks], fontsize=fs)
    ax.xaxis.tick_top()
    ax.yaxis.tick_right()
    if step > 1:
        ax.set_xlabel(f"one label in {step} shown ({n} tasks)", fontsize=max(fs, 7))
    if show_tree:
        # The dendrogram of the same tree, aligned with the heatmap rows (same height;
        # scipy puts leaf k at y = 10k + 5, imshow row k at k, top to bottom).
        tree_ax = fig.add_axes((pad / W, y0 / H, tree / W, heat / H))
        dendrogram(_linkage(np.asarray(D, dtype=np.float64)), orientation="left", ax=tree_ax, no_labels=True,
                   link_color_func=lambda _: "0.35")
        tree_ax.set_ylim(10 * n, 0)
        tree_ax.set_axis_off()
    cax = fig.add_axes(((x0 + heat + label_in + 0.25) / W, y0 / H, cbar / W, heat / H))
    cb = fig.colorbar(im, cax=cax)
    cb.set_label(colorbar_label, fontsize=9)
    cb.ax.tick_params(labelsize=8)
    fig.suptitle(f"{title} ({n} tasks)", fontsize=12, y=1 - 0.2 / H, va="top")
    return _save(fig, out)


def embedding_map(D: np.ndarray, seed: int = 0) -> np.ndarray:
    """2-D coordinates preserving the distances: t-SNE on the precomputed matrix,
    perplexity adapted to n (it must stay below n); classical MDS below 5 tasks."""
    n = D.shape[0]
    S = 0.5 * (D + D.T)
    S = S - S.min() if S.min() < 0 else S
    np.fill_diagonal(S, 0.0)
    if n < 5:
        J = np.eye(n) - 1.0 / n
        B = -0.5 * J @ (S**2) @ J
        w, v = np.linalg.eigh(B)
        idx = np.argsort(w)[::-1][:2]
        xy = v[:, idx] * np.sqrt(np.clip(w[idx], 0, None))
        return np.pad(xy, ((0, 0), (0, max(0, 2 - xy.shape[1]))))
    from sklearn.manifold import TSNE

    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    tsne = TSNE(n_components=2, metric="precomputed", init="random", perplexity=perplexity, random_state=seed)
    return tsne.fit_transform(S)


def plot_embedding_map(
    D: torch.Tensor | np.ndarray,
    labels: Sequence[str],
    groups: Sequence[str],
    out: str | os.PathLike[str],
    *,
    color_by: str = "group",
    title: str = "TASK2VEC map",
    seed: int = 0,
) -> Path:
    """Scatter of the tasks in 2-D (see :func:`embedding_map`), coloured by ``groups``."""
    plt = _plt()
    M = np.asarray(D, dtype=np.float64)
    n = M.shape[0]
    if len(labels) != n or len(groups) != n:
        raise ValueError("need one label and one group per task")
    xy = embedding_map(M, seed)
    cats = sorted(set(groups))
    # Many categories: keep the 19 largest, lump the rest, so the legend stays readable.
    if len(cats) > 20:
        counts = {c: list(groups).count(c) for c in cats}
        keep = set(sorted(cats, key=lambda c: (-counts[c], c))[:19])
        groups = [g if g in keep else "(other)" for g in groups]
        cats = sorted(set(groups))
    cmap = plt.get_cmap("tab20" if len(cats) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(9.5, 7.5))
    for k, c in enumerate(cats):
        sel = [i for i in range(n) if groups[i] == c]
        ax.scatter(xy[sel, 0], xy[sel, 1], s=46, color=cmap(k % cmap.N), label=c, edgecolors="white", linewidths=0.6)
    if n <= 40:
        fs = _font_size(n)
        for i in range(n):
            ax.annotate(_short(labels[i], 30), xy[i], xytext=(4, 3), textcoords="offset points", fontsize=fs, alpha=0.85)
    ax.legend(title=color_by, fontsize=8, title_fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5),
              frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.margins(0.08)  # room for the point labels at the edges
    method = "t-SNE (precomputed distances)" if n >= 5 else "classical MDS"
    ax.set_title(f"{title}: {n} tasks, {method}", fontsize=12)
    fig.subplots_adjust(left=0.03, right=0.72, top=0.93, bottom=0.03)
    return _save(fig, out)


def _save(fig, out: str | os.PathLike[str]) -> Path:  # noqa: ANN001 - matplotlib Figure
    from .embedding import atomic_write_bytes

    # Rendered in memory, then written like every other output (temporary file, rename; a
    # missing folder or a full disk is its OutputError): a kill mid-write leaves the old plot
    # or none, never a truncated image.
    p = Path(out)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, dpi=120, format=p.suffix.lstrip(".").lower() or "png")
    finally:
        _plt().close(fig)
    return atomic_write_bytes(p, buf.getvalue())


__all__ = ["cluster_order", "embedding_map", "plot_distance_matrix", "plot_embedding_map"]
