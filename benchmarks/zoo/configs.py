"""Run configurations of the reproduction: ``tiny`` (smoke test), ``small`` (2-core CPU), ``gpu`` (one H100).

Every departure from the paper's recipe (supplement 4.1-4.3) is a field here and
is written into the results JSON: input resolution, epochs, draws per epoch,
learning rates, embedding sample caps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class FinetuneConfig:
    """Expert training. Paper: head 10 epochs Adam, then SGD 60 epochs, lr 1e-3 (x0.1 at 40), wd 5e-4,
    10,000 class-balanced draws per epoch. Ours: the same phases, far fewer draws."""

    head_epochs: int = 10
    head_draws: int = 1000  # per epoch, on cached features of the untouched backbone
    head_lr: float = 1e-3
    epochs: int = 9
    draws_per_epoch: int = 640
    batch_size: int = 32
    lr: float = 1e-2  # 10x the paper's: ~5,800 images of fine-tuning instead of 600,000
    momentum: float = 0.9
    weight_decay: float = 5e-4
    decay_at: float = 2 / 3  # x0.1 at 40/60 of the epochs, as in the paper
    train_bn: bool = True


@dataclass(frozen=True)
class GroundTruthConfig:
    """Linear classifier on an expert's frozen features. Paper: Adam 16 epochs, lr 1e-4, wd 5e-4,
    10,000 class-balanced draws per epoch. Ours: 16 epochs of fewer draws at lr 1e-3."""

    epochs: int = 16
    draws_per_epoch: int = 2000
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 5e-4


@dataclass(frozen=True)
class EmbedSettings:
    methods: tuple[str, ...] = ("montecarlo", "variational")
    max_samples: int = 300
    mc_samples: int = 1
    batch_size: int = 32
    variational_steps: int = 60
    variational_average_last: float = 0.5


@dataclass(frozen=True)
class ZooConfig:
    name: str
    arch: str = "tf_efficientnet_lite0"
    pretrained: bool = True
    input_size: int = 32
    seed: int = 0
    threads: int = 1  # 1 thread: on a shared 2-core box, OpenMP spin-waits make 2 threads several x slower
    device: str = "auto"
    pools: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: str = "full"  # "full" (EXPERT_TASKS + MIXED_TASKS) or "tiny"
    task_scale: float = 1.0  # multiplies every task's samples per class (capped by the pool)
    finetune: FinetuneConfig = FinetuneConfig()
    gt: GroundTruthConfig = GroundTruthConfig()
    embed: EmbedSettings = EmbedSettings()
    feature_batch: int = 256
    alphas: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)
    report_alpha: float = 0.15
    m2v_epochs: int = 81  # MODEL2VEC early stop (supplement 4.3)
    stability_tasks: int = 6  # tasks embedded again with another seed to measure estimator noise
    demo: bool = False  # build examples/zoo + examples/data from this run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def section_hash(self, *keys: str) -> str:
        d = self.to_dict()
        payload = json.dumps({k: d[k] for k in keys}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


SMALL_POOLS = {
    "fashion": {"train_per_class": 150, "test_per_class": 50},
    "mnist": {"train_per_class": 150, "test_per_class": 50},
    "digits8": {"train_per_class": 115, "test_per_class": 60},
    "glyphs": {"per_char": {"latin_upper": [16, 8], "latin_lower": [16, 8], "greek_upper": [16, 8],
                            "cyrillic_upper": [16, 8], "digits": [32, 16]}},
}

CONFIGS: dict[str, ZooConfig] = {
    "tiny": ZooConfig(
        name="tiny",
        arch="test_efficientnet",
        pretrained=False,
        input_size=32,
        pools={"digits8": {"train_per_class": 40, "test_per_class": 15}},
        tasks="tiny",
        finetune=FinetuneConfig(head_epochs=1, head_draws=64, epochs=1, draws_per_epoch=32, batch_size=16),
        gt=GroundTruthConfig(epochs=2, draws_per_epoch=200, batch_size=50, lr=1e-2),
        embed=EmbedSettings(max_samples=24, batch_size=12, variational_steps=4),
        feature_batch=64,
        alphas=(0.0, 0.15, 0.5),
        m2v_epochs=20,
        stability_tasks=2,
    ),
    "small": ZooConfig(name="small", pools=SMALL_POOLS, demo=True),
    # One H100, under ~8 minutes: 224 px, ~3x the samples, longer fine-tuning. Prepared, not run here.
    "gpu": ZooConfig(
        name="gpu",
        input_size=224,
        threads=8,
        device="cuda",
        pools={
            "fashion": {"train_per_class": 400, "test_per_class": 100},
            "mnist": {"train_per_class": 350, "test_per_class": 100},
            "digits8": {"train_per_class": 115, "test_per_class": 60},
            "glyphs": {"per_char": {"latin_upper": [40, 12], "latin_lower": [40, 12], "greek_upper": [40, 12],
                                    "cyrillic_upper": [40, 12], "digits": [80, 24]}},
        },
        finetune=FinetuneConfig(head_epochs=10, head_draws=2000, epochs=12, draws_per_epoch=1000, batch_size=64),
        gt=GroundTruthConfig(epochs=16, draws_per_epoch=4000, batch_size=200, lr=1e-3),
        task_scale=2.5,
        embed=EmbedSettings(max_samples=500, batch_size=64, variational_steps=100),
        feature_batch=512,
    ),
}


def get_config(name: str, **overrides: Any) -> ZooConfig:
    if name not in CONFIGS:
        raise SystemExit(f"unknown config {name!r}; choose one of {', '.join(CONFIGS)}")
    return replace(CONFIGS[name], **overrides) if overrides else CONFIGS[name]
