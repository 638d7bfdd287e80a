"""Weights for a few demo experts, so `recommend --rerank` and `timm.create_model(rec.name)` work offline.

    python -m benchmarks.zoo.demo_weights                      # the default four experts
    python -m benchmarks.zoo.demo_weights fashion10 mnist10    # others

Each expert is fine-tuned exactly as the reproduction's ``small`` config does (same
pools, task, recipe and seed: ``cfg.seed + 1000 + its index``), then written into its
demo repo the way timm writes a model: ``config.json`` (architecture, num_classes,
and the pretrained_cfg it was trained with: 32 px, the lite0 package's mean/std,
bilinear, crop 1.0) and ``model.safetensors`` in float16 (9.3 MB each instead of 18.6;
the repository stays small). The repo then loads as ``local-dir:<repo>``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ("fashion10", "fashion_coarse5", "fashion_brightness3", "mnist10")


def build(names: tuple[str, ...] = DEFAULT, zoo: Path = ROOT / "examples" / "zoo" / "t2v-zoo") -> dict[str, dict]:
    from benchmarks.reproduce import DEFAULT_OUT, Cache, prepare
    from benchmarks.zoo import data as D
    from benchmarks.zoo import experts as X
    from benchmarks.zoo import tasks as TK
    from benchmarks.zoo.configs import get_config

    full = get_config("small")
    # Only the pools these experts train on; the seed index is the expert's place among all of
    # the small config's experts, as in the reproduction (which builds every pool).
    names_all = [s.name for s in TK.EXPERT_TASKS if s.pool in full.pools]
    wanted = {s.pool for s in TK.EXPERT_TASKS if s.name in names}
    cfg = replace(full, pools={k: v for k, v in full.pools.items() if k in wanted})
    torch.set_num_threads(cfg.threads)
    z = prepare(cfg, Cache(DEFAULT_OUT / cfg.name))
    tasks, crops, data_config = z["tasks"], z["crops"], z["data_config"]
    base = X.base_model(cfg)
    device = torch.device("cpu")
    out = {}
    for name in names:
        i = names_all.index(name)
        t = tasks[name]
        imgs = D.normalise(crops[t.pool][torch.as_tensor(t.train_idx)], data_config)
        tic = time.perf_counter()
        # As the reproduction: the head phase reads the generic features from its fp16 cache.
        generic = X.features(base, imgs, cfg.feature_batch, device).half().float()
        model, st = X.finetune(cfg, base, imgs, torch.as_tensor(t.train_y), generic, device, seed=cfg.seed + 1000 + i)
        repo = zoo / name
        pretrained_cfg = {
            "input_size": [3, cfg.input_size, cfg.input_size], "mean": list(data_config["mean"]),
            "std": list(data_config["std"]), "interpolation": "bilinear", "crop_pct": 1.0, "crop_mode": "center",
            "num_classes": t.num_classes, "classifier": "classifier",
        }
        config = {"architecture": cfg.arch, "num_classes": t.num_classes, "pretrained_cfg": pretrained_cfg,
                  "t2v_zoo": {"task": name, "train_accuracy": st["train_accuracy"], "seed": cfg.seed + 1000 + i,
                              "recipe": "benchmarks.reproduce --config small (fine-tuning)", "dtype": "float16"}}
        save_file({k: v.half().contiguous() if v.is_floating_point() else v.contiguous()
                   for k, v in model.state_dict().items()}, str(repo / "model.safetensors"))
        (repo / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        out[name] = {"train_accuracy": st["train_accuracy"], "seconds": round(time.perf_counter() - tic, 1)}
        print(f"{name}: train acc {st['train_accuracy']:.3f}, {out[name]['seconds']}s -> {repo}", flush=True)
    return out


if __name__ == "__main__":
    build(tuple(sys.argv[1:]) or DEFAULT)
