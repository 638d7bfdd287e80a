"""Taskonomy-style tasks sharing one input (TASK2VEC supplement, section 1.1), on a CPU.

    python -m benchmarks.taskonomy --config small --threads 1  # lite0 (offline ImageNet weights), ~8 min
    python -m benchmarks.taskonomy --config tiny    # random test_efficientnet, seconds (smoke test)

The same Fashion-MNIST images feed every task:

* 2D: ``edges`` (Sobel magnitude), ``autoencoding`` (the image), ``denoising`` (clean image
  from a noisy input), ``inpainting`` (the masked centre from the surroundings) -- pixel-wise
  regression;
* semantic: ``class10`` (the 10 classes), ``coarse5`` (top/bottom/dress/shoe/bag),
  ``segmentation`` (figure/ground, a pixel-wise 2-class softmax);
* geometric: ``rotation``, the in-plane rotation angle of a rotated image (camera roll, the
  one camera-pose quantity a flat product photo has), regressed by a label head.

Heads as in the supplement: labels by conv3x3 256 -> global average pool -> linear
(softmax, or the raw output for the angle); pixel-wise outputs by conv3x3 256 -> upsample
-> conv3x3 256 -> upsample -> conv3x3 128 -> upsample -> conv3x3 32 -> conv1x1 (every
conv3x3 followed by BatchNorm + ReLU, nearest upsampling), then a pixel-wise softmax or the
regression output. Each head is trained alone with Adam on the cached features of the
frozen backbone (``forward_features``, eval mode). The embedding is the per-filter
Monte-Carlo Fisher of the *backbone* weights through backbone + trained head: pixel-wise
softmax (``likelihood="categorical"`` on dense logits), unit-variance Gaussian for
regressions (targets standardised per task, so "unit variance" means the same for all).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from t2v_hub.fisher import estimate
from t2v_hub.probes import Probe, create_probe
from t2v_hub.probes.decoder import PixelDecoder, conv_bn_relu, upsample_sizes
from t2v_hub.selection.distances import pdist

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GROUP_COLOURS = {"2D": "tab:blue", "semantic": "tab:green", "geometric": "tab:orange"}


@dataclass(frozen=True)
class Config:
    name: str
    probe: str
    pretrained: bool
    image_px: int  # probe input size
    target_px: int  # resolution of the pixel-wise outputs
    train_per_class: int  # images for head training and the Fisher (10 classes)
    test_per_class: int  # held-out images: head quality only
    steps: int  # Adam steps per head
    batch: int
    lr: float
    fisher_batch: int
    noise_std: float  # denoising input noise, on [0, 1] pixel values
    max_angle: float  # rotation task: angle ~ U(-max_angle, max_angle) degrees
    threads: int


CONFIGS = {
    "tiny": Config("tiny", "test_efficientnet", False, 32, 8, 4, 2, 20, 16, 1e-3, 20, 0.3, 90.0, 1),
    "small": Config("small", "tf_efficientnet_lite0", True, 64, 16, 60, 20, 300, 64, 1e-3, 50, 0.3, 90.0, 2),
}


@dataclass(frozen=True)
class Task:
    name: str
    group: str
    kind: str  # "label" (class ids), "angle" (regression by a label head), "pixel_reg", "pixel_seg"
    inputs: str  # which input variant the task sees: clean / noisy / masked / rotated
    out: int  # classes or output channels


TASKS = [
    Task("edges", "2D", "pixel_reg", "clean", 1),
    Task("autoencoding", "2D", "pixel_reg", "clean", 1),
    Task("denoising", "2D", "pixel_reg", "noisy", 1),
    Task("inpainting", "2D", "pixel_reg", "masked", 1),
    Task("class10", "semantic", "label", "clean", 10),
    Task("coarse5", "semantic", "label", "clean", 5),
    Task("segmentation", "semantic", "pixel_seg", "clean", 2),
    Task("rotation", "geometric", "angle", "rotated", 1),
]
# Fashion-MNIST classes -> coarse groups (top, bottom, dress, shoe, bag).
COARSE = [0, 1, 0, 2, 0, 3, 0, 3, 4, 3]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- heads (supplement 1.1)


class LabelHead(nn.Module):
    """conv3x3 256 (+BN+ReLU) -> global average pool -> linear; logits or a regression output."""

    def __init__(self, cin: int, out: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin, 256)
        self.fc = nn.Linear(256, out)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(f).mean(dim=(2, 3)))


class BackboneWithHead(nn.Module):
    """The frozen probe backbone and a trained head: the model whose Fisher is measured."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x))


def make_head(task: Task, cin: int, feat_px: int, target_px: int) -> nn.Module:
    if task.kind in ("label", "angle"):
        return LabelHead(cin, task.out)
    size = target_px // 2 if task.name == "inpainting" else target_px  # the centre only
    return PixelDecoder(cin, task.out, upsample_sizes((feat_px, feat_px), (size, size)))


# ----------------------------------------------------------------------------- data


def load_images(cfg: Config, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (N, 28, 28) Fashion-MNIST images, fine labels, is_test flags (class-balanced)."""
    from benchmarks.zoo.data import build_fashion

    pool = build_fashion(cfg.train_per_class, cfg.test_per_class, seed)
    return pool.images, pool.attrs["fine"], pool.is_test


def rotate(images: np.ndarray, angles: np.ndarray) -> np.ndarray:
    from PIL import Image

    # Fashion-MNIST backgrounds are black: filling the corners with 0 leaves no rotation cue
    # other than the object itself.
    return np.stack([
        np.asarray(Image.fromarray(im).rotate(float(a), resample=Image.BILINEAR, fillcolor=0))
        for im, a in zip(images, angles, strict=True)
    ])


def build_inputs_targets(cfg: Config, probe: Probe, seed: int) -> dict[str, Any]:
    """Normalised probe inputs per variant and raw targets per task (before standardisation)."""
    from benchmarks.zoo.data import normalise, preprocess

    images, fine, is_test = load_images(cfg, seed)
    rng = np.random.default_rng(seed)
    angles = rng.uniform(-cfg.max_angle, cfg.max_angle, len(images))
    dc = probe.data_config
    clean_u8 = preprocess(images, dc)  # the library's image-folder path: PNG -> Preprocessor
    clean = clean_u8.float() / 255.0
    g = torch.Generator().manual_seed(seed)
    noisy = (clean + cfg.noise_std * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    s = cfg.image_px
    masked = clean.clone()
    masked[:, :, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = 0.5  # grey: not confusable with background
    mean, std = torch.tensor(dc["mean"])[:, None, None], torch.tensor(dc["std"])[:, None, None]
    to_input = {  # the corrupted variants are floats in [0, 1]: normalised like the Preprocessor does
        "clean": normalise(clean_u8, dc), "noisy": (noisy - mean) / std, "masked": (masked - mean) / std,
        "rotated": normalise(preprocess(rotate(images, angles), dc), dc),
    }
    grey = clean.mean(dim=1, keepdim=True)  # (N, 1, S, S)
    t = cfg.target_px
    small = F.adaptive_avg_pool2d(grey, t)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gx = F.conv2d(grey, sobel[None, None], padding=1)
    gy = F.conv2d(grey, sobel.t()[None, None], padding=1)
    edges = F.adaptive_avg_pool2d((gx.square() + gy.square()).sqrt(), t)
    c0, c1 = t // 4, t // 4 + t // 2
    fine_t = torch.as_tensor(fine, dtype=torch.long)
    targets = {
        "edges": edges,
        "autoencoding": small,
        "denoising": small,
        "inpainting": small[:, :, c0:c1, c0:c1],
        "class10": fine_t,
        "coarse5": torch.as_tensor(COARSE, dtype=torch.long)[fine_t],
        # Figure/ground at the target resolution: a pixel is object if it is mostly ink.
        "segmentation": (small[:, 0] > 0.1).long(),
        "rotation": torch.as_tensor(angles / cfg.max_angle, dtype=torch.float32)[:, None],
    }
    return {"inputs": to_input, "targets": targets, "is_test": torch.as_tensor(is_test), "fine": fine_t}


def standardise(y: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """One scalar mean/std per task from the training images: unit variance then means the same everywhere."""
    mu, sd = float(y[train].mean()), float(y[train].std())
    return (y - mu) / sd, {"mean": mu, "std": sd}


# ----------------------------------------------------------------------------- training and quality


@torch.no_grad()
def features(backbone: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([backbone.forward_features(x[i : i + batch]) for i in range(0, len(x), batch)])


def task_loss(task: Task, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if task.kind in ("label", "pixel_seg"):
        return F.cross_entropy(out, y)
    return 0.5 * F.mse_loss(out, y)  # mean Gaussian NLL up to a constant


def train_head(task: Task, head: nn.Module, f: torch.Tensor, y: torch.Tensor, cfg: Config, seed: int) -> list[float]:
    """Adam on cached features; returns the loss every 50 steps (for the record)."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(seed)
    head.train()
    curve = []
    for step in range(cfg.steps):
        idx = torch.randint(len(f), (min(cfg.batch, len(f)),), generator=g)
        loss = task_loss(task, head(f[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.steps - 1:
            curve.append(round(loss.item(), 5))
    head.eval()
    return curve


@torch.no_grad()
def quality(task: Task, head: nn.Module, f: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Held-out quality: accuracy (labels), pixel accuracy + IoU (segmentation), R^2 (regressions)."""
    out = head(f)
    if task.kind == "label":
        return {"accuracy": float((out.argmax(1) == y).float().mean())}
    if task.kind == "pixel_seg":
        pred = out.argmax(1)
        inter, union = float(((pred == 1) & (y == 1)).sum()), float(((pred == 1) | (y == 1)).sum())
        return {"pixel_accuracy": float((pred == y).float().mean()), "iou": inter / max(union, 1.0)}
    return {"r2": float(1 - (out - y).square().sum() / (y - y.mean()).square().sum())}


# ----------------------------------------------------------------------------- embedding


def fisher_embedding(
    probe: Probe, head: nn.Module, task: Task, x: torch.Tensor, cfg: Config, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Monte-Carlo Fisher of the backbone weights, per filter, on each half of the images.

    The two halves are independent estimates (their distance is the noise floor); with
    equal halves their mean is the estimate on all images.
    """
    model = BackboneWithHead(probe.model, head).eval()
    names = probe.measured_params()
    likelihood = "categorical" if task.kind in ("label", "pixel_seg") else "gaussian"
    halves = []
    for h, part in enumerate(x.chunk(2)):
        loader = [(part[i : i + cfg.fisher_batch],) for i in range(0, len(part), cfg.fisher_batch)]
        res = estimate(
            model, loader, "montecarlo", params=[f"backbone.{n}" for n in names],
            generator=torch.Generator().manual_seed(seed * 1000 + h), likelihood=likelihood,
        )
        halves.append(probe.layout.reduce({n: res.per_param[f"backbone.{n}"] for n in names}))
    return halves[0], halves[1]


# ----------------------------------------------------------------------------- separation statistics


def separation(D: np.ndarray, groups: list[str]) -> dict[str, Any]:
    """Within vs between distances, silhouette, exact permutation p-value and 2-cluster recovery."""
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    n = len(groups)
    lab = np.array([sorted(set(groups)).index(g) for g in groups])
    iu = np.triu_indices(n, 1)
    same = lab[iu[0]] == lab[iu[1]]
    within, between = float(D[iu][same].mean()), float(D[iu][~same].mean())
    sil = float(silhouette_score(D, lab, metric="precomputed"))
    # Exact test: every relabelling with the same group sizes (C(7,3) = 35 for 4 + 3 tasks).
    k = int((lab == lab[0]).sum())
    sils = []
    for pick in itertools.combinations(range(n), k):
        perm = np.ones(n, dtype=int)
        perm[list(pick)] = 0
        sils.append(silhouette_score(D, perm, metric="precomputed"))
    p_value = float(np.mean(np.array(sils) >= sil - 1e-12))
    clusters = fcluster(linkage(squareform(D, checks=False), method="average"), 2, criterion="maxclust")
    ari = float(adjusted_rand_score(lab, clusters))
    return {
        "mean_within": within, "mean_between": between, "between_over_within": between / within,
        "silhouette": sil, "silhouette_permutation_p": p_value, "num_relabellings": len(sils),
        "average_linkage_2_clusters": clusters.tolist(), "average_linkage_ari": ari,
        "average_linkage_recovers_split": ari == 1.0,
    }


def nearest_neighbours(D: np.ndarray, names: list[str], groups: list[str]) -> dict[str, Any]:
    M = D + np.diag(np.full(len(names), np.inf))
    nn_idx = M.argmin(1)
    return {
        "nearest": {names[i]: names[j] for i, j in enumerate(nn_idx)},
        "same_group_fraction": float(np.mean([groups[i] == groups[j] for i, j in enumerate(nn_idx)])),
    }


# ----------------------------------------------------------------------------- plot


def plot(D: np.ndarray, names: list[str], groups: list[str], out: Path, title: str) -> Path:
    """Clustered heatmap (average linkage, as t2v_hub.plots) with tick labels coloured by group."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from scipy.cluster.hierarchy import dendrogram, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    y = squareform(D, checks=False)
    tree = optimal_leaf_ordering(linkage(y, method="average"), y)
    fig = plt.figure(figsize=(8.4, 6.2))
    tax = fig.add_axes((0.02, 0.08, 0.16, 0.68))
    order = dendrogram(tree, orientation="left", ax=tax, no_labels=True, link_color_func=lambda _: "0.35")["leaves"]
    order = order[::-1]  # dendrogram draws leaf 0 at the bottom; the heatmap's row 0 is at the top
    tax.set_axis_off()
    ax = fig.add_axes((0.19, 0.08, 0.55, 0.68))
    M = D[np.ix_(order, order)]
    im = ax.imshow(M, cmap="viridis_r", interpolation="nearest", aspect="auto")
    for i in range(len(order)):
        for j in range(len(order)):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if M[i, j] < 0.5 * M.max() else "black")
    ticks = np.arange(len(order))
    ax.set_xticks(ticks, [names[i] for i in order], rotation=90, fontsize=9)
    ax.set_yticks(ticks, [names[i] for i in order], fontsize=9)
    ax.xaxis.tick_top()
    ax.yaxis.tick_right()
    for lab, i in zip([*ax.get_xticklabels(), *ax.get_yticklabels()], [*order, *order], strict=True):
        lab.set_color(GROUP_COLOURS[groups[i]])
    cax = fig.add_axes((0.88, 0.08, 0.025, 0.68))
    fig.colorbar(im, cax=cax).set_label("d_sym", fontsize=9)
    present = [g for g in GROUP_COLOURS if g in groups]
    fig.legend(handles=[Patch(color=GROUP_COLOURS[g], label=g) for g in present], loc="lower left", ncol=3,
               fontsize=9, frameon=False, bbox_to_anchor=(0.19, 0.0))
    fig.suptitle(title, fontsize=11, y=0.985)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out


# ----------------------------------------------------------------------------- pipeline


def run(config: str = "small", results_dir: Path | None = RESULTS, seed: int = 0,
        threads: int | None = None) -> dict[str, Any]:
    cfg = CONFIGS[config]
    if threads is not None:  # a busy shared machine: oversubscribed threads are slower than fewer
        cfg = replace(cfg, threads=threads)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    probe = create_probe(cfg.probe, 2, pretrained=cfg.pretrained, input_size=cfg.image_px)
    data = build_inputs_targets(cfg, probe, seed)
    train, test = ~data["is_test"], data["is_test"]
    timings["data"] = time.perf_counter() - t0
    t = time.perf_counter()
    feats = {k: features(probe.model, v, cfg.fisher_batch) for k, v in data["inputs"].items()}
    cin, feat_px = feats["clean"].shape[1], feats["clean"].shape[-1]
    timings["features"] = time.perf_counter() - t
    log(f"{int(train.sum())} train / {int(test.sum())} test images; features {tuple(feats['clean'].shape[1:])}")

    names, groups, embeddings, halves, tasks_out = [], [], [], [], {}
    for i, task in enumerate(TASKS):
        t = time.perf_counter()
        y, stats = data["targets"][task.name], None
        if task.kind in ("pixel_reg", "angle"):
            y, stats = standardise(y, train)
        head = make_head(task, cin, feat_px, cfg.target_px)
        f = feats[task.inputs]
        curve = train_head(task, head, f[train], y[train], cfg, seed + i)
        q = quality(task, head, f[test], y[test])
        t_train = time.perf_counter() - t
        a, b = fisher_embedding(probe, head, task, data["inputs"][task.inputs][train], cfg, seed + i)
        emb = 0.5 * (a + b)
        t_fisher = time.perf_counter() - t - t_train
        noise = float(pdist(torch.stack([a, b]))[0, 1])
        names.append(task.name)
        groups.append(task.group)
        embeddings.append(emb)
        halves.append((a, b))
        tasks_out[task.name] = {
            **asdict(task), "target_standardisation": stats, "head_params": sum(p.numel() for p in head.parameters()),
            "head_output": list(head(f[:1]).shape[1:]), "loss_curve": curve, "test_quality": q,
            "embedding_norm": float(emb.norm()), "split_half_distance": noise,
            "seconds_head": round(t_train, 2), "seconds_fisher": round(t_fisher, 2),
        }
        log(f"{task.name:13s} {task.group:9s} quality {q} split-half d_sym {noise:.4f} "
            f"({t_train:.0f}s head, {t_fisher:.0f}s Fisher)")

    E = torch.stack(embeddings)
    D = pdist(E).double().numpy()
    # Scale removed: d_sym is not invariant to one task's Fisher being orders of magnitude
    # smaller than another's (confident classifiers), so the same statistics on unit-norm
    # embeddings tell how much of the structure is scale alone.
    D_unit = pdist(E / E.norm(dim=1, keepdim=True)).double().numpy()
    core = [i for i, g in enumerate(groups) if g in ("2D", "semantic")]
    core_groups = [groups[i] for i in core]
    # The competing explanation of the structure: the head's output type, dense vs label.
    outputs = ["dense" if TASKS[i].kind.startswith("pixel") else "label" for i in core]
    sep = separation(D[np.ix_(core, core)], core_groups)
    result: dict[str, Any] = {
        "experiment": "TASK2VEC supplement 1.1: Taskonomy-style tasks sharing one input",
        "config": asdict(cfg), "seed": seed,
        "probe": {"name": probe.name, "weights": probe.config.pretrained, "weights_sha256": probe.config.weights_sha256,
                  "embedding_dim": probe.layout.dim, "feature_map": [cin, feat_px, feat_px],
                  "note": "the paper used ResNet-34; only tf_efficientnet_lite0/1/2 ImageNet weights exist offline"},
        "data": {"source": "Fashion-MNIST (Debian dataset-fashion-mnist, MIT), train file, class-balanced",
                 "train_images": int(train.sum()), "test_images": int(test.sum()),
                 "fisher_images": int(train.sum()), "preprocessing": "28 px grey -> PNG -> probe Preprocessor (RGB)"},
        "settings": {"optimizer": "Adam", "lr": cfg.lr, "steps": cfg.steps, "batch": cfg.batch,
                     "fisher": "montecarlo, 1 draw per image, two halves averaged",
                     "likelihoods": {"label": "categorical", "pixel_seg": "categorical (pixel-wise softmax)",
                                     "pixel_reg": "gaussian (unit variance, standardised targets)",
                                     "angle": "gaussian (unit variance, standardised target)"},
                     "upsample_sizes": {"full": upsample_sizes((feat_px, feat_px), (cfg.target_px, cfg.target_px)),
                                        "inpainting": upsample_sizes((feat_px, feat_px), (cfg.target_px // 2,) * 2)}},
        "tasks": tasks_out, "names": names, "groups": groups,
        "distance_matrix": np.round(D, 6).tolist(),
        "separation_2d_vs_semantic": sep,
        "separation_dense_vs_label_output": separation(D[np.ix_(core, core)], outputs),
        "nearest_neighbours_all_tasks": nearest_neighbours(D, names, groups),
        "unit_norm": {
            "distance_matrix": np.round(D_unit, 6).tolist(),
            "separation_2d_vs_semantic": separation(D_unit[np.ix_(core, core)], core_groups),
            "separation_dense_vs_label_output": separation(D_unit[np.ix_(core, core)], outputs),
            "nearest_neighbours_all_tasks": nearest_neighbours(D_unit, names, groups),
        },
        "median_split_half_distance": float(np.median([v["split_half_distance"] for v in tasks_out.values()])),
        "noise_note": ("split_half_distance is d_sym between the Fisher of two disjoint halves of the images; "
                       "for small noise d_sym grows with the estimator's variance (1/N), so two independent "
                       "full-size estimates of one task would be about half of it apart"),
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "machine": platform.machine(), "threads": cfg.threads},
    }
    timings["total"] = time.perf_counter() - t0
    result["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    log(f"separation (2D vs semantic): {json.dumps(sep)}")
    if results_dir is not None:
        results_dir = Path(results_dir)
        results_dir.mkdir(parents=True, exist_ok=True)
        suffix = "" if cfg.name == "small" else f"_{cfg.name}"
        plot(D, names, groups, results_dir / f"taskonomy{suffix}_distances.png",
             f"TASK2VEC d_sym, {probe.name}, Fashion-MNIST ({int(train.sum())} images)")
        (results_dir / f"taskonomy{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.taskonomy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the config's)")
    args = p.parse_args(argv)
    res = run(args.config, args.results_dir, args.seed, args.threads)
    sep = res["separation_2d_vs_semantic"]
    print(json.dumps({"separation": sep, "seconds": res["seconds"]}, indent=1))
    return 0 if all(math.isfinite(v) for v in res["distance_matrix"][0]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
