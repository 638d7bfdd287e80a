"""The committed demo: a local hub of the zoo's experts, a MODEL2VEC selector and a sample dataset.

Built by ``python -m benchmarks.reproduce --config small`` from the same run's
embeddings and ground truth:

- ``examples/zoo/t2v-zoo/<expert>/``: one repo per fine-tuned expert, a model card
  and ``task2vec/tf_efficientnet_lite0.safetensors`` (the TASK2VEC embedding of the
  expert's training task, montecarlo, 32 px, at most 300 samples, seed 0). No
  weights: the demo is about ranking, and the weights are cheap to regenerate.
- ``examples/zoo/t2v-zoo/model2vec-selector/selector.safetensors``: MODEL2VEC
  trained on every zoo task's error matrix (cells of an expert's own task left out).
- ``examples/data/fashion_tops4/``: 300 Fashion-MNIST test images (T-shirt,
  pullover, coat, shirt; 75 each) as an image folder, a task no expert was trained on.

    t2v-hub recommend --dataset examples/data/fashion_tops4 --hub examples/zoo
    t2v-hub recommend --dataset examples/data/fashion_tops4 --hub examples/zoo --selector t2v-zoo/model2vec-selector
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

NAMESPACE = "t2v-zoo"
SELECTOR_REPO = f"{NAMESPACE}/model2vec-selector"
SAMPLE = "fashion_tops4"
SAMPLE_CLASSES = {0: "tshirt", 2: "pullover", 4: "coat", 6: "shirt"}
SAMPLE_PER_CLASS = 75
DEMO_METHOD = "montecarlo"

FASHION_LICENCE = """\
Fashion-MNIST images: Copyright (c) 2017 Zalando SE, https://tech.zalando.com
Source: https://github.com/zalandoresearch/fashion-mnist (Debian package dataset-fashion-mnist)

The MIT License (MIT)

Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in the
Software without restriction, including without limitation the rights to use, copy,
modify, merge, publish, distribute, sublicense, and/or sell copies of the Software,
and to permit persons to whom the Software is furnished to do so, subject to the
following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE
OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""


def write_sample(root: Path, seed: int = 0) -> dict[str, Any]:
    """``examples/data/fashion_tops4``: PNGs from the Fashion-MNIST *test* file, one folder per class."""
    from PIL import Image

    from .data import FASHION_DIR, _read_idx, _stable_seed

    x = _read_idx(f"{FASHION_DIR}/t10k-images-idx3-ubyte.gz")
    y = _read_idx(f"{FASHION_DIR}/t10k-labels-idx1-ubyte.gz")
    out = root / SAMPLE
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(_stable_seed("demo-sample", seed))
    counts = {}
    for c, cname in SAMPLE_CLASSES.items():
        d = out / cname
        d.mkdir(parents=True)
        idx = rng.permutation(np.flatnonzero(y == c))[:SAMPLE_PER_CLASS]
        for i in sorted(idx):
            Image.fromarray(x[i]).save(d / f"t10k-{i:05d}.png", optimize=True)
        counts[cname] = len(idx)
    (out / "LICENSE").write_text(FASHION_LICENCE)
    (out / "README.md").write_text(
        f"# {SAMPLE}: a small Fashion-MNIST sample\n\n"
        f"{sum(counts.values())} greyscale 28x28 images from the Fashion-MNIST **test** set "
        f"(`t10k-images-idx3-ubyte`, file index in each name), {SAMPLE_PER_CLASS} per class: "
        f"{', '.join(SAMPLE_CLASSES.values())}. Image folder layout: one sub-folder per class.\n\n"
        "No expert of `examples/zoo` was trained on these images or on this 4-way task (the closest "
        "experts were trained on Fashion-MNIST *train* images).\n\n"
        "Licence: MIT, Copyright (c) 2017 Zalando SE (see LICENSE). Source: Debian package "
        "`dataset-fashion-mnist` (https://github.com/zalandoresearch/fashion-mnist).\n"
    )
    return {"path": str(out), "classes": counts}


def _card(name: str, task: dict[str, Any], stats: dict[str, Any], errors: dict[str, float], cfg: Any) -> str:
    ft = cfg.finetune
    best = sorted(errors.items(), key=lambda kv: kv[1])[:5]
    rows = "\n".join(f"| {t} | {100 * e:.1f}% |" for t, e in best)
    return (
        "---\n"
        "license: apache-2.0\n"
        "library_name: timm\n"
        "tags:\n- image-classification\n- t2v-zoo\n"
        "---\n\n"
        f"# {NAMESPACE}/{name}\n\n"
        f"A `{cfg.arch}` ({'ImageNet weights from the offline package' if cfg.pretrained else 'random init'}) "
        f"fine-tuned on the t2v-hub zoo task **{name}**: {task['description']} "
        f"({task['num_train']} training images, {task['num_classes']} classes, {cfg.input_size} px inputs).\n\n"
        f"Recipe (supplement 4.1 of TASK2VEC, scaled down for a CPU): classifier alone {ft.head_epochs} epochs x "
        f"{ft.head_draws} class-balanced draws (Adam, lr {ft.head_lr:g}), then the whole network "
        f"{ft.epochs} epochs x {ft.draws_per_epoch} draws (SGD momentum {ft.momentum:g}, lr {ft.lr:g}, x0.1 after "
        f"{ft.decay_at:.0%} of the epochs, weight decay {ft.weight_decay:g}). Training accuracy "
        f"{100 * stats['train_accuracy']:.1f}%.\n\n"
        "**This demo repo holds no weights**, only the TASK2VEC embedding of the training task "
        "(`task2vec/`), so that `t2v-hub recommend` can rank it. Regenerate the weights with "
        "`python -m benchmarks.reproduce --config small` (cached under `benchmarks/zoo/out/`).\n\n"
        "Lowest test errors of a linear classifier on this expert's frozen features, over the zoo's tasks:\n\n"
        "| task | error |\n|---|---|\n" + rows + "\n"
    )


def build_demo(cfg: Any, pools: dict, embs: dict, gt: dict, task_names: list[str], expert_names: list[str],
               trivial: dict, examples_root: Path, expert_stats: dict[str, Any]) -> dict[str, Any]:
    from t2v_hub.hub import LocalHub, push_embedding
    from t2v_hub.selection.eval_results import eval_results_yaml
    from t2v_hub.selection.model2vec import SelectorConfig, compat_of
    from t2v_hub.selection.training import train_model2vec

    from .tasks import ALL_TASKS

    zoo = examples_root / "zoo"
    if zoo.exists():
        shutil.rmtree(zoo)
    zoo.mkdir(parents=True)
    (zoo / ".gitignore").write_text("# lock files and journals the local hub creates when read or written\n.t2v/\n")
    hub = LocalHub(zoo)
    em = embs[DEMO_METHOD]
    errors = {n: gt["errors"][n] for n in task_names}
    repos = []
    for j, name in enumerate(expert_names):
        repo = f"{NAMESPACE}/{name}"
        hub.create_repo(repo)
        spec = ALL_TASKS[name]
        task = {"description": spec.description, "num_train": int(em[name].metadata.get("num_samples", 0)),
                "num_classes": int(em[name].metadata.get("num_classes", 0))}
        from .tasks import materialise

        t = materialise(spec, pools[spec.pool], cfg.task_scale)
        task["num_train"] = len(t.train_idx)
        err_j = {n: errors[n][1 + j] for n in task_names if n != name}
        hub.commit(repo, {"README.md": _card(name, task, expert_stats[name], err_j, cfg).encode()},
                   "model card", parent_commit=None)
        push_embedding(hub, repo, em[name])
        # The ground truth as the expert's own evaluation results (Hub .eval_results format),
        # so `t2v-hub selector train --eval-results examples/zoo` can learn from it.
        acc = {f"zoo/{n}": round(100.0 * (1.0 - errors[n][1 + j]), 2) for n in task_names}
        hub.commit(repo, {".eval_results/t2v-zoo.yaml": eval_results_yaml(
            acc, task_id="linear-probe", notes="accuracy (%) of a linear classifier on frozen features, test split")},
            "evaluation results", parent_commit=None)
        repos.append(repo)
    # MODEL2VEC on all tasks; an expert's own task is left out of its column.
    X = torch.stack([em[n].vector for n in task_names])
    F = torch.stack([em[n].vector for n in expert_names])
    E = torch.tensor([errors[n][1:] for n in task_names], dtype=torch.float32)
    for i, n in enumerate(task_names):
        if n in expert_names:
            E[i, expert_names.index(n)] = float("nan")
    # bias="layer" (the default): the variant that beat d_asym under leave-one-domain-out
    # (BENCHMARKS.md); benchmarks/zoo/demo_selector.py retrains it from a built demo alone.
    from t2v_hub.selection.layer_weights import layer_ids

    sel = train_model2vec(X, F, E, trivial[DEMO_METHOD].vector, SelectorConfig(alpha=cfg.report_alpha, bias="layer"),
                          layers=layer_ids(em[expert_names[0]]), expert_ids=repos,
                          compat=compat_of(em[expert_names[0]]), task_ids=task_names)
    hub.create_repo(SELECTOR_REPO)
    hub.commit(SELECTOR_REPO, {
        "selector.safetensors": sel.to_bytes(),
        "README.md": (
            "---\nlicense: apache-2.0\ntags:\n- t2v-zoo\n- model2vec-selector\n---\n\n"
            f"# {SELECTOR_REPO}\n\nA MODEL2VEC selector (TASK2VEC supplement 4.3) for the experts of this demo hub, "
            f"trained on the zoo's error matrix ({len(task_names)} tasks x {len(expert_names)} experts; cells of an "
            "expert's own task left out) with `tf_efficientnet_lite0` montecarlo embeddings at "
            f"{cfg.input_size} px. Use it with `t2v-hub recommend --hub examples/zoo --selector {SELECTOR_REPO}`.\n"
        ).encode(),
    }, "MODEL2VEC selector", parent_commit=None)
    for meta in zoo.glob("*/*/.t2v"):
        shutil.rmtree(meta)
    sample = write_sample(examples_root / "data", cfg.seed)
    e0 = em[expert_names[0]]
    settings = {"probe": e0.probe, "method": e0.method, "input_size": e0.config("input_size"),
                "max_samples": cfg.embed.max_samples, "seed": cfg.seed, "mc_samples": cfg.embed.mc_samples,
                "batch_size": cfg.embed.batch_size, "include_norm": e0.metadata.get("include_norm")}
    (zoo / "ZOO.json").write_text(json.dumps({
        "experts": repos, "selector": SELECTOR_REPO, "embedding_settings": settings,
        "sample_dataset": sample, "command": f"t2v-hub recommend --dataset examples/data/{SAMPLE} --hub examples/zoo",
    }, indent=1) + "\n")
    size = sum(p.stat().st_size for p in zoo.rglob("*") if p.is_file())
    return {"experts": repos, "selector": SELECTOR_REPO, "embedding_settings": settings, "sample": sample,
            "zoo_bytes": size}
