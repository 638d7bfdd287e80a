"""Toy task space of the TASK2VEC supplement (section 5, Fig. 4), with the analytic Fisher.

    python -m benchmarks.toy_tasks            # writes benchmarks/results/reproduce_toy.{json,png}

64 binary tasks on a uniform 2-D grid in [-1, 1]^2: each clusters the grid by
k-means into k clusters (k = 3..16, cycled; a different seed per task) and labels
half of the clusters (floor(k/2), chosen at random) 1. Two probes:

- ``relu``: 10 random features max(0, a x + b y + c), a, b ~ U[-1/2, 1/2], c ~ U[-1, 1]
  (a fixed feature extractor with parameters U = (a, b; c));
- ``poly``: the 9 monomials of degree 1..3 in (x, y) (no parameters of its own).

A logistic classifier p = sigma(w^T phi(x) + b0) is fitted on each task. The Fisher with
labels drawn from the model (the true Fisher) is then, per sample, p(1 - p) times the
squared gradient of the logit:

- ``relu`` (feature-extractor weights, the section-5 quantity with the ReLU derivative
  1[u_k . x + c_k > 0] in place of the sigmoid's z(1 - z)):
  F[k, j] = mean_i p_i (1 - p_i) w_k^2 1[u_k . x_i + c_k > 0] x_ij^2,  j in {x, y};
- ``poly`` (the classifier weights, the only parameters): F[j] = mean_i p_i (1 - p_i) phi_j(x_i)^2.

Both are compared to the library's estimator (``t2v_hub.fisher.estimate``, montecarlo,
on the same model written as torch layers; binary softmax with logits (0, s) is the
sigmoid of s) and then embedded in 2-D by t-SNE of the symmetric TASK2VEC distance,
each task drawn as its own label map. Whether tasks of similar complexity group
together is measured by the Spearman correlation between d_sym(i, j) and |k_i - k_j|
and by the mean |k_i - k_nn(i)| of each task's nearest neighbour against chance.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

RESULTS = Path(__file__).resolve().parent / "results"
GRID = 24  # 24 x 24 = 576 points


def make_tasks(n_tasks: int = 64, seed: int = 0) -> tuple[np.ndarray, list[dict[str, Any]]]:
    from sklearn.cluster import KMeans

    g = np.linspace(-1, 1, GRID)
    xx, yy = np.meshgrid(g, g)
    X = np.stack([xx.ravel(), yy.ravel()], 1)
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n_tasks):
        k = 3 + i % 14
        km = KMeans(n_clusters=k, n_init=1, random_state=seed * 1000 + i).fit(X)
        pos = rng.choice(k, size=k // 2, replace=False)
        y = np.isin(km.labels_, pos).astype(np.int64)
        tasks.append({"k": k, "y": y})
    return X, tasks


def relu_probe(seed: int = 0, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 7)
    return rng.uniform(-0.5, 0.5, size=(n, 2)), rng.uniform(-1, 1, size=n)


def poly_features(X: np.ndarray) -> np.ndarray:
    x, y = X[:, 0], X[:, 1]
    return np.stack([x, y, x * x, x * y, y * y, x**3, x * x * y, x * y * y, y**3], 1)


def fit_logistic(phi: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, float]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=10.0, max_iter=5000).fit(phi, y)
    return clf.coef_[0], float(clf.intercept_[0]), float(clf.score(phi, y))


def analytic_fisher(probe: str, X: np.ndarray, w: np.ndarray, b0: float, U=None, c=None) -> np.ndarray:
    if probe == "relu":
        pre = X @ U.T + c
        phi = np.maximum(pre, 0)
        p = 1 / (1 + np.exp(-(phi @ w + b0)))
        act = (pre > 0).astype(np.float64)
        v = p * (1 - p)
        return np.einsum("i,ik,ij->kj", v, act * w[None] ** 2, X**2) / len(X)  # (10, 2)
    phi = poly_features(X)
    p = 1 / (1 + np.exp(-(phi @ w + b0)))
    return (p * (1 - p)) @ (phi**2) / len(X)  # (9,)


def torch_model(probe: str, w: np.ndarray, b0: float, U=None, c=None) -> nn.Module:
    head = nn.Linear(len(w), 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor(np.stack([np.zeros_like(w), w]), dtype=torch.float32))
        head.bias.copy_(torch.tensor([0.0, b0]))
    if probe == "relu":
        first = nn.Linear(2, U.shape[0])
        with torch.no_grad():
            first.weight.copy_(torch.tensor(U, dtype=torch.float32))
            first.bias.copy_(torch.tensor(c, dtype=torch.float32))
        return nn.Sequential(first, nn.ReLU(), head).eval()
    return head.eval()


def estimated_fisher(probe: str, model: nn.Module, inputs: np.ndarray, mc_samples: int, seed: int) -> np.ndarray:
    from t2v_hub.fisher import estimate

    x = torch.tensor(inputs, dtype=torch.float32)
    loader = [(x[i : i + 128], torch.zeros(len(x[i : i + 128]), dtype=torch.long)) for i in range(0, len(x), 128)]
    name = "0.weight" if probe == "relu" else "weight"
    res = estimate(model, loader, "montecarlo", params=[name], mc_samples=mc_samples,
                   generator=torch.Generator().manual_seed(seed))
    f = res.per_param[name].double().numpy()
    # poly: the Fisher of the logit row (row 1); row 0 has the same diagonal for a 2-way softmax
    return f if probe == "relu" else f[1]


def d_sym_matrix(V: np.ndarray) -> np.ndarray:
    from t2v_hub.selection.distances import pdist

    return pdist(torch.tensor(V, dtype=torch.float32)).double().numpy()


def grouping_stats(D: np.ndarray, ks: np.ndarray, seed: int = 0) -> dict[str, float]:
    from scipy.stats import spearmanr

    iu = np.triu_indices(len(ks), 1)
    rho = spearmanr(D[iu], np.abs(ks[:, None] - ks[None])[iu]).statistic
    Dn = D + np.diag(np.full(len(ks), np.inf))
    nn_gap = float(np.mean(np.abs(ks - ks[np.argmin(Dn, 1)])))
    rng = np.random.default_rng(seed)
    chance = float(np.mean([np.mean(np.abs(ks - ks[rng.permutation(len(ks))])) for _ in range(200)]))
    return {"spearman_dsym_vs_kgap": float(rho), "nn_k_gap": nn_gap, "nn_k_gap_chance": chance}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=64)
    ap.add_argument("--mc-samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    X, tasks = make_tasks(args.tasks, args.seed)
    U, c = relu_probe(args.seed)
    ks = np.array([t["k"] for t in tasks])
    out: dict[str, Any] = {"grid": GRID * GRID, "num_tasks": len(tasks), "k": ks.tolist(),
                           "mc_samples": args.mc_samples, "probes": {}}
    emb = {}
    for probe in ("relu", "poly"):
        phi = np.maximum(X @ U.T + c, 0) if probe == "relu" else poly_features(X)
        A, rel_err, corr, accs = [], [], [], []
        for i, t in enumerate(tasks):
            w, b0, acc = fit_logistic(phi, t["y"])
            accs.append(acc)
            fa = analytic_fisher(probe, X, w, b0, U, c)
            model = torch_model(probe, w, b0, U, c)
            fe = estimated_fisher(probe, model, X if probe == "relu" else phi, args.mc_samples, args.seed + i)
            A.append(fa.ravel())
            rel_err.append(float(np.abs(fe - fa).sum() / max(np.abs(fa).sum(), 1e-30)))
            corr.append(float(np.corrcoef(fe.ravel(), fa.ravel())[0, 1]) if fa.ravel().std() > 0 else 1.0)
        V = np.array(A)
        emb[probe] = V
        D = d_sym_matrix(V)
        norms = np.linalg.norm(V, axis=1)
        from scipy.stats import spearmanr

        out["probes"][probe] = {
            "dim": int(V.shape[1]),
            "train_accuracy_mean": float(np.mean(accs)),
            "estimator_vs_analytic_rel_l1_mean": float(np.mean(rel_err)),
            "estimator_vs_analytic_rel_l1_max": float(np.max(rel_err)),
            "estimator_vs_analytic_corr_min": float(np.min(corr)),
            "spearman_norm_vs_k": float(spearmanr(norms, ks).statistic),
            "spearman_train_acc_vs_k": float(spearmanr(accs, ks).statistic),
            **grouping_stats(D, ks, args.seed),
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(X, tasks, emb, args.out / "reproduce_toy_tsne.png", args.seed)
    (args.out / "reproduce_toy.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["probes"], indent=1))
    return 0


def spread(Z: np.ndarray, size: np.ndarray, steps: int = 3000) -> np.ndarray:
    """Positions near ``Z`` (scaled to [0, 1]) whose ``size`` (width, height) boxes do not overlap.

    Pairwise pushes along the axis of least overlap plus a weak pull home: each thumbnail
    moves only as far as it must, and a leader line shows where its task really is.
    """
    P = Z.copy()
    for _ in range(steps):
        moved = False
        d = P[:, None, :] - P[None, :, :]
        over = size - np.abs(d)
        clash = (over > 0).all(-1) & ~np.eye(len(P), dtype=bool)
        if clash.any():
            moved = True
            axis = over.argmin(-1)  # push along the axis that needs less
            push = np.where(np.arange(2)[None, None, :] == axis[..., None], np.sign(d + 1e-9) * over, 0.0)
            P += 0.5 * (push * clash[..., None]).sum(1) / np.maximum(clash.sum(1, keepdims=True), 1)
        P = np.clip(P + 0.002 * (Z - P), size / 2, 1 - size / 2)
        if not moved:
            break
    return P


def plot(X: np.ndarray, tasks: list[dict[str, Any]], emb: dict[str, np.ndarray], path: Path, seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, 2, figsize=(18, 9.5))
    titles = {"relu": "(a) 10 random ReLU features (Fisher of the feature weights)",
              "poly": "(b) degree-3 polynomial features (Fisher of the classifier)"}
    norm, cmap = Normalize(3, 16), plt.cm.viridis
    zoom = 1.2
    fig.canvas.draw()
    for ax, (probe, V) in zip(axes, emb.items(), strict=True):
        box = ax.get_window_extent()
        side = (GRID * zoom + 8) * fig.dpi / 72  # the map, its frame and padding, in pixels
        size = np.array([side / box.width, side / box.height]) * 1.04
        D = d_sym_matrix(V)
        Z = TSNE(n_components=2, metric="precomputed", init="random", perplexity=10, random_state=seed).fit_transform(D)
        lo, hi = Z.min(0), Z.max(0)
        Zn = 0.08 + 0.84 * (Z - lo) / np.maximum(hi - lo, 1e-9)
        P = spread(Zn, size)
        ks = np.array([t["k"] for t in tasks])
        for z, q in zip(Zn, P, strict=True):
            ax.plot([z[0], q[0]], [z[1], q[1]], color="0.6", lw=0.6, zorder=1)
        ax.scatter(Zn[:, 0], Zn[:, 1], c=ks, cmap=cmap, norm=norm, s=14, zorder=2, edgecolors="k", linewidths=0.3)
        for q, t in zip(P, tasks, strict=True):
            img = t["y"].reshape(GRID, GRID)[::-1]
            ab = AnnotationBbox(OffsetImage(img, zoom=zoom, cmap="coolwarm"), q, frameon=True, pad=0.1, zorder=3,
                                bboxprops={"lw": 2.0, "ec": cmap(norm(t["k"]))})
            ax.add_artist(ab)
            ax.text(q[0] + 0.5 * size[0], q[1] - 0.5 * size[1], str(t["k"]), fontsize=8, fontweight="bold", zorder=4,
                    ha="right", va="bottom", bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none",
                                                   "alpha": 0.85})
        ax.set_title(titles[probe], fontsize=11)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    bar = fig.colorbar(sm, ax=axes, fraction=0.02, pad=0.01, ticks=range(3, 17))
    bar.set_label("k: clusters in the task's label map (frame colour, dot colour and the number on each map)")
    fig.suptitle("Toy task space (supplement Fig. 4): t-SNE of d_sym. Each map is one task's labels on the grid"
                 " (red = 1); the dot is where t-SNE put it, the line leads to its map.", fontsize=11)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
